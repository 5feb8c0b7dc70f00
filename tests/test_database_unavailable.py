"""Issue 20, item 4: every connection-level database failure is "unavailable" on every route (503 + Retry-After,
/ready false), and a client that hangs up mid-body is a client abort (499, INFO), never "database unavailable"."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.app import create_app
from gateway.metrics import HTTP
from tests.conftest import TEST_WEBHOOK_SECRET, make_settings, url_with
from tests.platform_app import json_logs, serving
from tests.stripe_events import checkout_session, make_event, signed_event
from tests.support_helpers import poll

REFUSALS: dict[str, Callable[[str], str]] = {
    "database missing": lambda url: url_with(url, database="no_such_database"),
    "authentication refused": lambda url: url_with(url, user="no_such_role"),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_a_database_refusing_connections_is_503_with_retry_after_on_every_route(
    aiohttp_client: Any, database_url: str, refusal: str
) -> None:
    settings = make_settings(DB_ACQUIRE_TIMEOUT="2", READY_DB_TIMEOUT="2")
    client = await aiohttp_client(create_app(settings, database_url=REFUSALS[refusal](database_url)))
    body, headers = signed_event(make_event("checkout.session.completed", checkout_session(None)), TEST_WEBHOOK_SECRET)

    answers = {
        "webhook": await client.post("/stripe/webhook", data=body, headers=headers),
        "products": await client.get("/v1/products"),
        "ready": await client.get("/ready"),
    }

    for route, response in answers.items():
        assert response.status == 503, (route, response.status, await response.text())
        assert int(response.headers["Retry-After"]) > 0, route
    assert (await answers["webhook"].json())["error"]["code"] == "database_unavailable"
    assert (await answers["ready"].json())["error"]["details"]["reasons"] == ["database unreachable"]
    assert (await client.get("/health")).status == 200


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["handler_reads_on", "handler_cancelled"])
async def test_a_client_hanging_up_mid_body_is_a_client_abort(app_factory: Any, handler_cancellation: bool) -> None:
    async with serving(app_factory(), handler_cancellation=handler_cancellation) as port:
        await _hang_up_mid_body(port)


async def _hang_up_mid_body(port: int) -> None:
    before = {status: _sample("stripe_webhook_responses_total", status=status) for status in ("499", "503", "500")}
    answered = sum(n for (route, _, _), n in HTTP.answers.items() if route == "stripe_webhook")

    def hang_up_mid_body() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /stripe/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Stripe-Signature: t=1,v1=00\r\nContent-Length: 5000\r\n\r\n{"id": "evt_'
            )

    with json_logs() as logs:
        await asyncio.to_thread(hang_up_mid_body)

        async def recorded() -> bool:  # the answer is recorded when the body read fails
            return sum(n for (route, _, _), n in HTTP.answers.items() if route == "stripe_webhook") > answered

        await poll(recorded, within=30, interval=0.01)

    assert _sample("stripe_webhook_responses_total", status="499") == before["499"] + 1
    assert _sample("stripe_webhook_responses_total", status="503") == before["503"]
    assert _sample("stripe_webhook_responses_total", status="500") == before["500"]
    messages = [(e["level"], e["message"]) for e in logs.entries]
    assert ("info", "client closed the connection before the answer") in messages
    assert not [m for m in messages if m[1] in ("database unavailable", "unhandled error", "request failed")]
    assert not [e for e in logs.entries if e["level"] in ("error", "critical")]
