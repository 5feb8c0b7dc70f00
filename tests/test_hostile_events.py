"""Issue 21, item 1, webhook side: a signed Stripe event that PostgreSQL cannot store as sent (a NUL in a string,
a lone surrogate, 1000-level nesting, `created` = 10^15) must be recorded in the ledger in a storable form and
answered 200 `ignored` with the reason: nothing lost, nothing a 500.

The envelope parser finds them (gateway/input_rules.py's rule, and `created` against the range a timestamp can
hold); the ledger records them with their exact bytes.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from gateway.webhooks.signature import sign
from tests.conftest import TEST_WEBHOOK_SECRET

ENVELOPE = (
    b'{"id": "evt_%s", "object": "event", "type": "invoice.paid", "created": %s, "livemode": false, '
    b'"api_version": "2025-03-31.basil", "data": {"object": %s}}'
)
HOSTILE_EVENTS = {
    "nul_character": ENVELOPE % (b"nul", b"1700000000", b'{"id": "in_1", "object": "invoice", "customer": "c\\u0000"}'),
    "lone_surrogate": ENVELOPE % (b"surrogate", b"1700000000", b'{"id": "in_\\ud800", "object": "invoice"}'),
    "nesting_too_deep": ENVELOPE
    % (b"deep", b"1700000000", b'{"id": "in_2", "x": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"),
    "created_out_of_range": ENVELOPE % (b"created", b"1000000000000000", b'{"id": "in_3", "object": "invoice"}'),
}


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory())


@pytest.mark.parametrize("reason", sorted(HOSTILE_EVENTS))
async def test_a_signed_event_postgresql_cannot_store_is_recorded_and_ignored(
    client: Any, db_pool: asyncpg.Pool, reason: str
) -> None:
    body = HOSTILE_EVENTS[reason]
    headers = {"Stripe-Signature": sign(body, TEST_WEBHOOK_SECRET, int(time.time()))}
    response = await client.post("/stripe/webhook", data=body, headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "ignored"
    async with db_pool.acquire() as con:
        status = await con.fetchval("SELECT status FROM webhook_events WHERE stripe_event_id LIKE 'evt_%'")
    assert status == "ignored"
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT outcome_reason, raw_body, payload FROM webhook_events")
    problem = "timestamp_out_of_range" if reason == "created_out_of_range" else reason
    assert row["outcome_reason"] == f"not storable as sent: {problem}; raw bytes kept"
    assert bytes(row["raw_body"]) == body  # nothing lost: the exact bytes Stripe signed
    assert row["payload"]["unstorable"] == problem
    # a second delivery of the same bytes is a duplicate, not a second row
    again = await client.post("/stripe/webhook", data=body, headers=headers)
    assert again.status == 200
    assert (await again.json())["status"] == "duplicate"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 1
