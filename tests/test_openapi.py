"""The OpenAPI contract (gateway/openapi/openapi.yaml): it matches the application's route table, it is served
at /openapi.json, and schemathesis finds no 5xx and no answer outside the schema on a live server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from gateway.accounts import passwords, store
from gateway.db.pool import connect
from gateway.openapi.routes import document
from tests.conftest import TRUNCATE_ALL, make_settings
from tests.factories import create_product
from tests.fakes.stripe_api import FakeStripe
from tests.test_auth_jwt import claims, hs256

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
LOCAL_KEY = "local-signing-key-" + "k" * 32
SCHEMATHESIS_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    operations = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        operations.add((route.method, route.resource.canonical if route.resource else ""))
    return operations


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_document_is_openapi_3_1_with_resolvable_refs() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, f"unresolved {ref}"
            node = node[part]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert operation.get("operationId"), (method, path)
                assert "default" in operation["responses"] or operation["responses"], (method, path)


def test_document_matches_the_route_table(app_factory: Any) -> None:
    app = app_factory(AUTH_LOCAL_ENABLED="true", AUTH_LOCAL_JWT_SECRET=LOCAL_KEY)
    routes = app_operations(app)
    documented = documented_operations()
    assert routes - documented == set(), "routes missing from gateway/openapi/openapi.yaml"
    assert documented - routes == set(), "documented operations the app does not have"


async def test_document_is_served_as_json(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> None:
    client = await aiohttp_client(app_factory())
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document()


# ------------------------------------------------------------------ schemathesis against a live server


class LiveGateway:
    """The real app and a fake Stripe served on real ports by a background thread with its own event loop."""

    def __init__(self, database_url: str, **overrides: Any) -> None:
        self.database_url = database_url
        self.overrides = overrides
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runners: list[web.AppRunner] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the live gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        from gateway.app import create_app

        fake = FakeStripe()
        fake.base_url = await self._serve(fake.app)
        settings = make_settings(STRIPE_API_BASE=fake.base_url, **self.overrides)
        self.base_url = await self._serve(create_app(settings, database_url=self.database_url))

    async def _cleanup(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()


def live_overrides() -> dict[str, Any]:
    """The live gateway the fuzzers hit: local accounts on, rate limits and stock-hold bounds out of the way."""
    unbounded = 100_000
    return {
        "AUTH_LOCAL_ENABLED": "true",
        "AUTH_LOCAL_JWT_SECRET": LOCAL_KEY,
        "AUTH_COOKIE_SECURE": "false",
        "CORS_ORIGINS": "https://shop.example",
        "RATE_LIMIT_PUBLIC_MAX": unbounded,
        "RATE_LIMIT_AUTH_MAX": unbounded,
        "RATE_LIMIT_AUTH_ACCOUNT_MAX": unbounded,
        "RATE_LIMIT_CHECKOUT_MAX": unbounded,
        "RATE_LIMIT_WEBHOOK_MAX": unbounded,
        "CHECKOUT_MAX_OPEN_SESSIONS_PER_USER": unbounded,
        "CHECKOUT_MAX_HELD_UNITS_PER_USER": unbounded,
        "CHECKOUT_MAX_HELD_UNITS_PER_ADDRESS": unbounded,
    }


async def _seed(database_url: str) -> None:
    con = await connect(database_url)
    try:
        await con.execute(TRUNCATE_ALL)
        for n in range(1, 6):
            await create_product(con, f"SKU-{n}", stock=3, unit_amount=500 * n)
        await store.create_user(con, "ada@example.com", passwords.hash_password_sync("correct horse battery"), [])
    finally:
        await con.close()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(database_url: str, tmp_path: Path) -> None:
    executable = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(executable).exists():
        pytest.fail("schemathesis is not installed (it is in the dev extra of pyproject.toml)")
    asyncio.run(_seed(database_url))
    token = hs256(claims(sub="fuzz-user", exp=int(time.time()) + 3600))
    with LiveGateway(database_url, **live_overrides()) as live:
        result = subprocess.run(
            [
                executable,
                "run",
                f"{live.base_url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--max-examples",
                str(SCHEMATHESIS_EXAMPLES),
                "--seed",
                "20250331",
                "--header",
                f"Authorization: Bearer {token}",
                "--request-timeout",
                "20",
                "--workers",
                "1",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
