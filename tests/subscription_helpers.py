"""Helpers of the subscription / bridge tests: drive the ledger directly, build subscription lifecycles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from gateway.subscriptions import plans
from gateway.webhooks.envelope import parse_event
from gateway.webhooks.ledger import IngestResult, ingest
from tests.stripe_events import make_event

PRICE_PREMIUM = "price_premium_monthly_eur"
PRICE_PRO = "price_pro_monthly_eur"
TEST_PLANS = plans.PlanMap(
    {
        PRICE_PREMIUM: "premium",
        PRICE_PRO: "pro",
        "price_1IDQm5JDPojXS6LNM31hxKzp": "premium",
        "plan_00000000000000": "legacy",
        "price_1234": "premium",
    },
    "tests",
)


@pytest.fixture
def test_plans() -> Iterator[plans.PlanMap]:
    plans.install(TEST_PLANS)
    yield TEST_PLANS
    plans.install(None)


async def deliver(pool: asyncpg.Pool, event: dict[str, Any], *, app_source: str = "website") -> IngestResult:
    """What the webhook view does after the signature check: parse the envelope and ingest it."""
    parsed = parse_event(json.dumps(event).encode(), required_livemode=None)
    return await ingest(pool, parsed, request_id="req-test-0001", handlers_enabled=True, app_source=app_source)


def event(type_: str, obj: dict[str, Any], created: int, event_id: str | None = None) -> dict[str, Any]:
    return make_event(type_, obj, created=created, event_id=event_id)


async def bridge_rows(con: asyncpg.Connection, prefix: str = "SUBSCRIPTION_") -> list[dict[str, Any]]:
    rows = await con.fetch(
        "SELECT id, event_type, user_id, app_source, payload, metadata, source_event_id FROM bridge_events "
        "WHERE event_type LIKE $1 ORDER BY id",
        prefix + "%",
    )
    return [dict(r) for r in rows]


async def subscription_row(con: asyncpg.Connection, sub_id: str) -> dict[str, Any] | None:
    row = await con.fetchrow("SELECT * FROM subscriptions WHERE stripe_subscription_id = $1", sub_id)
    return dict(row) if row is not None else None
