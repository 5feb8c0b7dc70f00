"""The bridge outbox: NOTIFY after commit only, and the reader endpoint for other apps."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from gateway.bridge import events
from gateway.bridge.notify import BridgeWakeup
from gateway.unit_of_work import UnitOfWork
from tests.stripe_events import make_event, new_id, subscription
from tests.subscription_helpers import PRICE_PREMIUM, deliver
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.test_auth_jwt import claims, hs256

pytestmark = pytest.mark.usefixtures("test_plans")


async def test_listener_hears_after_commit_and_never_for_a_rollback(
    db_pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.webhooks import handlers
    from gateway.webhooks.ledger import HandlerFailed

    wakeup = BridgeWakeup(database_url)
    await wakeup.start()
    try:
        # rolled back: the handler publishes, then fails; nothing is announced
        real = handlers.HANDLERS["customer.subscription.created"]

        async def publish_then_fail(unit: Any, event: Any) -> Any:
            await real(unit, event)
            raise RuntimeError("boom")

        monkeypatch.setitem(handlers.HANDLERS, "customer.subscription.created", publish_then_fail)
        failing = make_event(
            "customer.subscription.created",
            subscription(price_id=PRICE_PREMIUM, sub_id=new_id("sub", 14), user_id="u"),
        )
        with pytest.raises(HandlerFailed):
            await deliver(db_pool, failing)
        assert await wakeup.wait(0.3) is False
        assert wakeup.notifications == []
        monkeypatch.setitem(handlers.HANDLERS, "customer.subscription.created", real)

        # committed: announced once the transaction has committed, with the row's id and type
        await deliver(
            db_pool,
            make_event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=new_id("sub", 14), user_id="u"),
            ),
        )
        assert await wakeup.wait(5.0) is True
        async with db_pool.acquire() as con:
            new_id_ = await con.fetchval("SELECT max(id) FROM bridge_events")
        assert wakeup.notifications == [f"{new_id_}:SUBSCRIPTION_ACTIVATED"]
    finally:
        await wakeup.close()


async def test_readers_never_skip_a_row_that_commits_late(db_pool: asyncpg.Pool) -> None:
    """Writers do not wait for each other; a reader waits for every writer that has drawn a bridge id, so a row
    committed late with a smaller id is never skipped by `id > cursor` paging."""
    payload = {
        "subscription_id": "s",
        "plan_id": "p",
        "status": "active",
        "customer_id": None,
        "currency": None,
        "amount": None,
    }
    async with db_pool.acquire() as first, db_pool.acquire() as second, db_pool.acquire() as reader:
        tx = first.transaction()
        await tx.start()
        unit = UnitOfWork(first, actor="t", source_event_id="evt_first", request_id=None)
        await unit.publish("SUBSCRIPTION_UPDATED", None, payload)

        async with second.transaction():  # not held back by the first writer
            other = UnitOfWork(second, actor="t", source_event_id="evt_second", request_id=None)
            await asyncio.wait_for(other.publish("SUBSCRIPTION_UPDATED", None, payload), 5)

        read = asyncio.create_task(events.page(reader, 0, 10))
        await asyncio.sleep(0.2)
        assert not read.done()  # waiting for the first writer, whose id is smaller than the committed second's
        await tx.commit()
        rows = await asyncio.wait_for(read, 5)
    assert [r.source_event_id for r in rows] == ["evt_first", "evt_second"]
    assert rows[0].id < rows[1].id


# ------------------------------------------------------------------ reader endpoint


def token(*roles: str, sub: str = "svc-letters") -> dict[str, str]:
    return {"Authorization": "Bearer " + hs256(claims(sub=sub, roles=list(roles)))}


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory(PLANS_FILE="tests/fixtures/plans-test.yaml"))


async def test_reader_pages_with_a_cursor_and_filters_types(client: Any, db_pool: asyncpg.Pool) -> None:
    for i in range(5):
        await deliver(
            db_pool,
            make_event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=f"sub_page{i}", user_id=f"u{i}"),
            ),
        )
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.deleted",
            subscription(price_id=PRICE_PREMIUM, sub_id="sub_page0", user_id="u0", status="canceled"),
            created=2_000_000_000,
        ),
    )

    first = await client.get("/v1/bridge/events?limit=2", headers=token("bridge:read"))
    assert first.status == 200, await first.text()
    body = await first.json()
    assert [e["user_id"] for e in body["events"]] == ["u0", "u1"] and body["has_more"] is True
    event = body["events"][0]
    assert set(event) == {
        "id",
        "event_type",
        "user_id",
        "app_source",
        "payload",
        "metadata",
        "source_event_id",
        "created_at",
    }
    rest = await client.get(f"/v1/bridge/events?after={body['next_cursor']}&limit=100", headers=token("bridge:read"))
    rest_body = await rest.json()
    assert len(rest_body["events"]) == 4 and rest_body["has_more"] is False
    ids = [e["id"] for e in body["events"] + rest_body["events"]]
    assert ids == sorted(ids)
    cancelled = await client.get("/v1/bridge/events?types=SUBSCRIPTION_CANCELLED", headers=token("bridge:read"))
    assert [e["payload"]["subscription_id"] for e in (await cancelled.json())["events"]] == ["sub_page0"]


@pytest.mark.parametrize(
    "query, status",
    [
        ("?after=-1", 400),
        ("?limit=0", 400),
        ("?limit=501", 400),
        ("?after=abc", 400),
        ("?types=NOPE_EVENT", 400),
    ],
)
async def test_reader_rejects_bad_parameters(client: Any, query: str, status: int) -> None:
    response = await client.get("/v1/bridge/events" + query, headers=token("bridge:read"))
    assert response.status == status
    assert (await response.json())["error"]["code"] == "invalid_parameter"


async def test_reader_needs_the_bridge_role(client: Any) -> None:
    assert (await client.get("/v1/bridge/events")).status == 401
    assert (await client.get("/v1/bridge/events", headers=token("other"))).status == 403
