"""Issue 20, item 6: trying the gateway locally. `serve` in development generates a webhook secret (printed once),
`gateway dev send-event` signs sample events with it and posts them to the gateway on 127.0.0.1, and
`examples/catalog.json` imports."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.dev.samples import SAMPLE_TYPES, Sample, sample_event
from gateway.webhooks.envelope import parse_event
from tests.cli_process import ROOT, clean_env, closed_port
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.platform_app import serving
from tests.support_helpers import order_status, poll, run_cli


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.mark.parametrize("event_type", SAMPLE_TYPES)
def test_every_sample_is_an_event_the_gateway_accepts(event_type: str) -> None:
    sample = Sample("0b8f8a8e-3f0e-4a8c-9d1e-7a4f8a0c2b11", amount=1500, key="k")
    event = parse_event(json.dumps(sample_event(event_type, sample)).encode(), required_livemode=False)
    assert event.type == event_type
    # by its order id, or (a dispute, as Stripe sends it) by the charge of the order's payment
    assert event.ids.order_id == sample.order_id or event.ids.charge_id == sample.charge_id


async def test_send_event_pays_then_refunds_an_order_of_the_local_gateway(
    db_pool: asyncpg.Pool, app_factory: Any
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, "MUG-CLASSIC", stock=5, unit_amount=1250)
        order_id = await create_order(con, [(product, 2)])

    async with serving(app_factory()) as port:
        settings = make_settings(PORT=str(port))  # the default URL: http://127.0.0.1:PORT/stripe/webhook
        paid = await run_cli(
            ["dev", "send-event", "checkout.session.completed", "--order", order_id, "--amount", "2500"], settings
        )
        refunded = await run_cli(
            ["dev", "send-event", "charge.refunded", "--order", order_id, "--amount", "2500"], settings
        )

    assert paid.code == 0, paid.stderr
    assert paid.json["status"] == 200 and paid.json["answer"]["status"] == "processed"
    assert refunded.code == 0, refunded.stderr
    assert await order_status(db_pool, order_id) == "refunded"
    async with db_pool.acquire() as con:
        order = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order_id)
    assert order["stripe_checkout_session_id"] == paid.json["checkout_session_id"]
    assert order["paid_at"] is not None


async def test_send_event_without_an_order_is_a_checkout_that_creates_a_paid_order(
    db_pool: asyncpg.Pool, app_factory: Any
) -> None:
    """The README's quick start: a completed checkout the gateway did not start (as from a Payment Link)."""
    async with serving(app_factory()) as port:
        sent = await run_cli(["dev", "send-event", "checkout.session.completed"], make_settings(PORT=str(port)))

    assert sent.code == 0, sent.stderr
    assert sent.json["order_id"] is None
    async with db_pool.acquire() as con:
        order = await con.fetchrow(
            "SELECT status, amount_total FROM orders WHERE stripe_checkout_session_id = $1",
            sent.json["checkout_session_id"],
        )
    assert (order["status"], order["amount_total"]) == ("paid", 2000)


async def test_send_event_with_the_wrong_secret_is_refused_and_says_so(db_pool: asyncpg.Pool, app_factory: Any) -> None:
    async with serving(app_factory()) as port:
        result = await run_cli(
            ["dev", "send-event", "payment_intent.succeeded", "--secret", "whsec_not_the_right_one"],
            make_settings(PORT=str(port)),
        )
    assert result.code == 1
    assert result.json["status"] == 400


async def test_send_event_without_a_gateway_is_one_line(tmp_path: Path) -> None:
    env = clean_env({"PORT": str(closed_port())}, tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "dev",
        "send-event",
        "checkout.session.completed",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 1
    assert stderr.decode().startswith("gateway: dev send-event: no answer from http://127.0.0.1:")
    assert "Traceback" not in stderr.decode()


async def test_serve_in_development_generates_the_secret_once_and_send_event_uses_it(
    database_url: str, tmp_path: Path
) -> None:
    port = closed_port()
    env = clean_env(
        {
            "APP_ENV": "development",
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": "",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "SHUTDOWN_DRAIN_SECONDS": "0",
        },
        tmp_path,
    )

    async def serve_once() -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            lines: list[str] = []
            async with asyncio.timeout(60):  # bounds a failure only (a gateway that never says it)
                while "development webhook secret" not in (lines[-1] if lines else ""):
                    line = await process.stderr.readline()
                    assert line, "".join(lines)  # the gateway ended without announcing the secret
                    lines.append(line.decode())
            await poll(lambda: listening(port), within=60)
            sent = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "dev",
                "send-event",
                "payment_intent.payment_failed",
                env=env,
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await sent.communicate()
            assert sent.returncode == 0, err.decode()
            assert json.loads(out)["status"] == 200
        finally:
            process.send_signal(signal.SIGTERM)
            _, rest = await process.communicate()
        return "".join(lines) + rest.decode()

    first = await serve_once()
    secret = (tmp_path / "data" / "dev-webhook-secret").read_text().strip()
    assert secret.startswith("whsec_")
    assert "development webhook secret (generated, kept in " in first and secret in first
    assert "gateway dev send-event" in first
    second = await serve_once()
    assert secret not in second  # printed once, when generated
    assert "development webhook secret: the one in" in second


async def test_the_sample_catalog_imports(db_pool: asyncpg.Pool, database_url: str) -> None:
    result = await run_cli(
        ["products", "import", str(ROOT / "examples" / "catalog.json")], make_settings(DATABASE_URL=database_url)
    )
    assert result.code == 0, result.stderr
    async with db_pool.acquire() as con:
        skus = {r["sku"] for r in await con.fetch("SELECT sku FROM products")}
    assert {"MUG-CLASSIC", "TEE-BLACK-M", "POSTER-A2"} <= skus
