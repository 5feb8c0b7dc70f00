"""`gateway events reconcile` against the local fake of Stripe's API: only the events missing from the ledger
are ingested (like a webhook delivery), every page is read, the window is at most 30 days."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from gateway.settings import Settings
from gateway.support import reconcile as reconcile_module
from gateway.support.reconcile import parse_since
from gateway.unit_of_work import UnitOfWork
from gateway.webhooks import handlers
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers.base import Outcome
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_events import checkout_session, make_event, new_id
from tests.support_helpers import deliver, ledger_row, order_status, run_cli, stock_of

DAY = 86400


@pytest.fixture
def settings(database_url: str, fake_stripe: FakeStripe) -> Settings:
    return make_settings(DATABASE_URL=database_url, STRIPE_API_BASE=fake_stripe.base_url)


async def orders_with_events(
    pool: asyncpg.Pool, n: int, *, age: int = 3600
) -> tuple[int, list[str], list[dict[str, Any]]]:
    async with pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=100)
        orders = [await create_order(con, [(product, 1)]) for _ in range(n)]
    now = int(time.time())
    events = [
        make_event("checkout.session.completed", checkout_session(o, user_id="user-1"), created=now - age + i)
        for i, o in enumerate(orders)
    ]
    return product, orders, events


def list_requests(fake: FakeStripe) -> list[Any]:
    return fake.requests_to("GET", "/v1/events")


async def test_reconcile_ingests_only_missing_events(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    product, orders, events = await orders_with_events(db_pool, 6)
    ignored_type = make_event("customer.created", {"id": "cus_1", "object": "customer"}, created=int(time.time()) - 100)
    for event in events[:2]:  # delivered by the webhook already
        assert (await deliver(db_pool, event)).status == "processed"
    fake_stripe.add_events([*events, ignored_type])

    result = await run_cli(["events", "reconcile", "--since", "30d"], settings)

    assert result.code == 0, result.stderr
    report = result.json
    assert (report["seen"], report["already_known"], report["ingested"], report["failed"]) == (7, 2, 5, 0)
    assert report["outcomes"] == {"processed": 4, "ignored": 1}
    assert report["request_id"].startswith("reconcile-")
    assert [await order_status(db_pool, o) for o in orders] == ["paid"] * 6
    assert await stock_of(db_pool, product) == 94  # each order's stock committed once
    for event in events[2:]:
        row = await ledger_row(db_pool, event["id"])
        assert row["status"] == "processed" and row["request_id"] == report["request_id"]
        assert row["payload"] == event  # stored as Stripe sent it
    for event in events[:2]:
        row = await ledger_row(db_pool, event["id"])
        assert row["attempts"] == 1 and row["request_id"] == "req-test-0001"  # untouched
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 6
    # The query: created[gte] 30 days back, biggest pages.
    (request,) = list_requests(fake_stripe)
    assert request.query["limit"] == "100"
    assert abs(int(request.query["created"]["gte"]) - (int(time.time()) - 30 * DAY)) < 60
    assert request.authorization == "Bearer sk_test_gatewaytests"
    assert request.stripe_version == settings.stripe_api_version

    # Twice is harmless.
    again = await run_cli(["events", "reconcile"], settings)
    assert again.code == 0
    assert (again.json["seen"], again.json["already_known"], again.json["ingested"]) == (7, 7, 0)
    assert await stock_of(db_pool, product) == 94


async def test_reconcile_reads_every_page(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_module, "PAGE_SIZE", 4)
    _, orders, events = await orders_with_events(db_pool, 10)
    await deliver(db_pool, events[5])
    fake_stripe.add_events(events)

    result = await run_cli(["events", "reconcile", "--since", "2d"], settings)

    assert result.code == 0, result.stderr
    assert (result.json["seen"], result.json["already_known"], result.json["ingested"]) == (10, 1, 9)
    requests = list_requests(fake_stripe)
    assert len(requests) == 3  # 4 + 4 + 2
    assert [r.query.get("starting_after") for r in requests] == [None, events[6]["id"], events[2]["id"]]
    assert all(r.query["limit"] == "4" for r in requests)
    assert [await order_status(db_pool, o) for o in orders] == ["paid"] * 10
    # Ingested oldest first, as they happened.
    async with db_pool.acquire() as con:
        ids = [r["stripe_event_id"] for r in await con.fetch("SELECT stripe_event_id FROM webhook_events ORDER BY id")]
    assert ids == [events[5]["id"]] + [e["id"] for i, e in enumerate(events) if i != 5]


async def test_reconcile_window_is_at_most_30_days(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    now = int(time.time())
    recent = make_event("customer.created", {"id": "cus_1", "object": "customer"}, created=now - 2 * DAY)
    old = make_event("customer.created", {"id": "cus_2", "object": "customer"}, created=now - 10 * DAY)
    too_old = make_event("customer.created", {"id": "cus_3", "object": "customer"}, created=now - 31 * DAY)
    fake_stripe.add_events([recent, old, too_old])

    short = await run_cli(["events", "reconcile", "--since", "3d"], settings)
    assert short.code == 0
    assert (short.json["seen"], short.json["ingested"]) == (1, 1)

    clamped = await run_cli(["events", "reconcile", "--since", "90d"], settings)
    assert clamped.code == 0
    assert (clamped.json["seen"], clamped.json["already_known"], clamped.json["ingested"]) == (2, 1, 1)
    assert abs(clamped.json["since"] - (now - 30 * DAY)) < 60
    assert await ledger_row(db_pool, too_old["id"]) is None


async def test_reconcile_type_filter(db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe) -> None:
    _, _, events = await orders_with_events(db_pool, 2)
    other = make_event("customer.created", {"id": "cus_1", "object": "customer"}, created=int(time.time()) - 50)
    fake_stripe.add_events([*events, other])

    result = await run_cli(
        ["events", "reconcile", "--type", "checkout.session.completed", "--type", "checkout.session.expired"],
        settings,
    )

    assert result.code == 0
    assert (result.json["seen"], result.json["ingested"]) == (2, 2)
    assert list_requests(fake_stripe)[0].query["types"] == [
        "checkout.session.completed",
        "checkout.session.expired",
    ]
    assert await ledger_row(db_pool, other["id"]) is None


async def test_reconcile_with_the_kill_switch_only_records(
    db_pool: asyncpg.Pool, database_url: str, fake_stripe: FakeStripe
) -> None:
    _, orders, events = await orders_with_events(db_pool, 1)
    fake_stripe.add_events(events)
    settings = make_settings(
        DATABASE_URL=database_url, STRIPE_API_BASE=fake_stripe.base_url, WEBHOOK_HANDLERS_ENABLED="false"
    )

    result = await run_cli(["events", "reconcile"], settings)

    assert result.code == 0
    assert result.json["outcomes"] == {"received": 1}
    assert await order_status(db_pool, orders[0]) == "pending"
    assert (await ledger_row(db_pool, events[0]["id"]))["status"] == "received"


async def test_reconcile_counts_handler_failures_and_exits_1(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, orders, events = await orders_with_events(db_pool, 2)
    fake_stripe.add_events(events)

    async def broken(unit: UnitOfWork, event: StripeEvent) -> Outcome:
        if event.id == events[0]["id"]:
            raise RuntimeError("simulated handler bug")
        return await real(unit, event)

    real = handlers.HANDLERS["checkout.session.completed"]
    monkeypatch.setitem(handlers.HANDLERS, "checkout.session.completed", broken)

    result = await run_cli(["events", "reconcile"], settings)

    assert result.code == 1
    assert (result.json["seen"], result.json["ingested"], result.json["failed"]) == (2, 1, 1)
    assert result.json["failed_events"][0]["event_id"] == events[0]["id"]
    row = await ledger_row(db_pool, events[0]["id"])
    assert row["status"] == "failed" and "simulated handler bug" in row["last_error"]
    assert await order_status(db_pool, orders[1]) == "paid"


async def test_reconcile_stripe_error_exits_1(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    fake_stripe.fail_next(1, status=401, path="/v1/events")
    result = await run_cli(["events", "reconcile"], settings)
    assert result.code == 1
    assert result.json["error"] and "AuthenticationError" in result.json["error"]
    assert "Stripe events listing stopped" in result.stderr


@pytest.mark.parametrize("since", ["abc", "0d", "-3d", "10y"])
async def test_reconcile_bad_since_exits_2(settings: Settings, since: str) -> None:
    result = await run_cli(["events", "reconcile", f"--since={since}"], settings)
    assert result.code == 2


async def test_reconcile_without_a_stripe_key_exits_2(database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, STRIPE_SECRET_KEY="")
    result = await run_cli(["events", "reconcile"], settings)
    assert result.code == 2 and "STRIPE_SECRET_KEY" in result.stderr


def test_parse_since() -> None:
    assert parse_since("30d") == 30 * DAY
    assert parse_since("12h") == 12 * 3600
    assert parse_since("90m") == 5400
    assert parse_since("3600") == parse_since("3600s") == 3600
    assert parse_since("1w") == 7 * DAY
