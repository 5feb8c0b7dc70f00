"""Group commit (gateway/db/pipeline.py): concurrent statements share a round trip and a commit, and a failing
statement never takes the others' work down with it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway.db.pipeline import Pipeline
from gateway.db.pool import create_pool
from gateway.webhooks.envelope import parse_event
from gateway.webhooks.ledger import HandlerFailed, ingest
from tests.conftest import make_settings
from tests.stripe_events import event_body, make_event, payment_intent
from tests.webhook_support import ledger_row, order_row, seed_order


@pytest.fixture
async def probe(db_pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A table of its own: an identity (the order rows were written in) and a non-negative value."""
    table = f"pipeline_probe_{secrets.token_hex(4)}"
    async with db_pool.acquire() as con:
        await con.execute(
            f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY, n integer NOT NULL CHECK (n >= 0))"
        )
    yield table
    async with db_pool.acquire() as con:
        await con.execute(f"DROP TABLE {table}")


def insert(table: str) -> str:
    return f"INSERT INTO {table} (n) VALUES ($1) RETURNING n, txid_current() AS xid"


async def values(pool: asyncpg.Pool, table: str) -> list[int]:
    async with pool.acquire() as con:
        return [row["n"] for row in await con.fetch(f"SELECT n FROM {table} ORDER BY id")]


async def test_concurrent_statements_share_one_transaction(db_pool: asyncpg.Pool, probe: str) -> None:
    pipeline = Pipeline(db_pool, max_batches=1, batch_share=1)  # a batch takes every waiting call
    batches = REGISTRY.get_sample_value("gateway_db_batch_statements_count") or 0.0
    big = REGISTRY.get_sample_value("gateway_db_batch_statements_bucket", {"le": "16.0"}) or 0.0

    rows = await asyncio.gather(*(pipeline.fetchrow(insert(probe), n) for n in range(20)))

    assert [row["n"] for row in rows] == list(range(20))  # each caller gets its own row back
    assert len({row["xid"] for row in rows}) == 1  # one transaction, one commit
    assert REGISTRY.get_sample_value("gateway_db_batch_statements_count") == batches + 1
    assert REGISTRY.get_sample_value("gateway_db_batch_statements_bucket", {"le": "16.0"}) == big  # 20 > 16
    assert sorted(await values(db_pool, probe)) == list(range(20))


async def test_a_batch_takes_a_quarter_of_the_calls_in_the_pipeline(db_pool: asyncpg.Pool, probe: str) -> None:
    """20 calls at once, one connection: a quarter of the 20 (5), then of what is left, but never fewer than 4
    while that many wait; every call committed once, in the order it came."""
    pipeline = Pipeline(db_pool, max_batches=1)

    rows = await asyncio.gather(*(pipeline.fetchrow(insert(probe), n) for n in range(20)))

    assert [row["n"] for row in rows] == list(range(20))
    transactions = [row["xid"] for row in rows]
    sizes = [transactions.count(xid) for xid in sorted(set(transactions))]
    assert sizes == [5, 4, 4, 4, 3]
    assert await values(db_pool, probe) == list(range(20))


WAITING = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass"


async def waiting_for_lock(pool: asyncpg.Pool, table: str, count: int) -> None:
    """Until `count` statements wait for a lock on `table` (bounded: 10 s)."""
    async with pool.acquire() as con:
        for _ in range(1000):
            if await con.fetchval(WAITING, table) >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"{count} statements never waited for {table}")


async def test_the_share_counts_the_batch_on_its_way(db_pool: asyncpg.Pool, probe: str) -> None:
    """4 calls on their way (held by a lock), then 20 more: the other connection takes a quarter of all 24 (6, where
    the 20 waiting alone would give 5); later batches take a quarter of what is in the pipeline then."""
    pipeline = Pipeline(db_pool)
    async with db_pool.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        await holder.execute(f"LOCK TABLE {probe} IN ACCESS EXCLUSIVE MODE")
        first = asyncio.gather(*(pipeline.fetchrow(insert(probe), n) for n in range(4)))
        await waiting_for_lock(db_pool, probe, 1)
        rest = asyncio.gather(*(pipeline.fetchrow(insert(probe), n) for n in range(4, 24)))
        await waiting_for_lock(db_pool, probe, 2)
        await lock.commit()
    rows = [*await first, *await rest]

    transactions = [row["xid"] for row in rows]
    sizes = [transactions.count(xid) for xid in set(transactions)]
    assert max(sizes) == 6 and sum(sizes) == 24
    assert transactions[:4] == [transactions[0]] * 4  # the first 4 committed together
    assert sorted(await values(db_pool, probe)) == list(range(24))
    await pipeline.close()


async def test_a_call_alone_is_sent_at_once(db_pool: asyncpg.Pool, probe: str) -> None:
    pipeline = Pipeline(db_pool)

    first = await pipeline.fetchrow(insert(probe), 1)
    second = await pipeline.fetchrow(insert(probe), 2)

    assert first["xid"] != second["xid"]
    assert await values(db_pool, probe) == [1, 2]
    await pipeline.close()


async def test_a_failing_statement_does_not_undo_the_others(
    db_pool: asyncpg.Pool, probe: str, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = Pipeline(db_pool, max_batches=1)
    wanted = [3, 1, -1, 4, 5]

    with caplog.at_level(logging.INFO, logger="gateway.db"):
        results = await asyncio.gather(*(pipeline.fetchrow(insert(probe), n) for n in wanted), return_exceptions=True)

    assert isinstance(results[2], asyncpg.CheckViolationError)
    good = [r for r in results if isinstance(r, asyncpg.Record)]
    assert [row["n"] for row in good] == [3, 1, 4, 5]
    assert len({row["xid"] for row in good}) == 4  # after the rollback, each ran in its own transaction
    assert sorted(await values(db_pool, probe)) == [1, 3, 4, 5]
    assert "batch rolled back; its statements run one by one" in caplog.messages


async def test_members_run_in_order_of_their_key(db_pool: asyncpg.Pool, probe: str) -> None:
    pipeline = Pipeline(db_pool, max_batches=1)
    keys = ["c", "a", "d", "b"]

    await asyncio.gather(*(pipeline.fetchrow(insert(probe), i, order=(k,)) for i, k in enumerate(keys)))

    assert await values(db_pool, probe) == [1, 3, 0, 2]  # a, b, c, d


async def test_a_cancelled_call_is_not_sent(db_pool: asyncpg.Pool, probe: str) -> None:
    pipeline = Pipeline(db_pool, max_batches=1)
    cancelled = asyncio.create_task(pipeline.fetchrow(insert(probe), 7))
    await asyncio.sleep(0)  # queued, its runner not started yet
    cancelled.cancel()

    await pipeline.fetchrow(insert(probe), 8)

    assert await values(db_pool, probe) == [8]
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_an_unreachable_database_fails_every_waiting_call(database_url: str) -> None:
    pool = await create_pool(make_settings(), database_url, min_size=0, max_size=2)
    await pool.close()
    pipeline = Pipeline(pool)

    results = await asyncio.gather(*(pipeline.fetchrow("SELECT $1::int", n) for n in range(5)), return_exceptions=True)

    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    await pipeline.close()  # no runner left behind


async def test_a_delivery_failing_in_a_batch_leaves_the_others_committed(
    db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Two orders claim one payment intent: the second write breaks its unique key inside a shared batch. The
    first payment and an unrelated one still commit; only the second delivery fails (500, ledger `failed`)."""
    async with db_pool.acquire() as con:
        orders = [(await seed_order(con)).order_id for _ in range(3)]
    events = [
        make_event("payment_intent.succeeded", payment_intent(orders[0], pi_id="pi_shared_intent_one")),
        make_event("payment_intent.succeeded", payment_intent(orders[1], pi_id="pi_shared_intent_one")),
        make_event("payment_intent.succeeded", payment_intent(orders[2])),
    ]
    pipeline = Pipeline(db_pool, max_batches=1)  # one runner: the three writes travel in one batch

    async def deliver(event: dict[str, object]) -> str:
        parsed = parse_event(event_body(event), required_livemode=None)
        try:
            result = await ingest(pipeline, parsed, request_id="req-batch", handlers_enabled=True, app_source="web")
        except HandlerFailed:
            return "failed"
        return result.status

    with caplog.at_level(logging.INFO, logger="gateway.db"):
        outcomes = await asyncio.gather(*(deliver(e) for e in events))

    assert "batch rolled back; its statements run one by one" in caplog.messages
    assert sorted(outcomes) == ["failed", "processed", "processed"]
    async with db_pool.acquire() as con:
        statuses = [(await order_row(con, order_id))["status"] for order_id in orders]
        assert statuses.count("paid") == 2 and statuses[2] == "paid"
        ledger = [await ledger_row(con, str(e["id"])) for e in events]
        assert sorted(str(row["status"]) for row in ledger if row) == ["failed", "processed", "processed"]


async def test_a_cancelled_runner_ends_its_callers_too(db_pool: asyncpg.Pool) -> None:
    """The loop shutting down cancels the runner mid-batch: its callers end (cancelled), none waits forever."""
    pipeline = Pipeline(db_pool, max_batches=1)
    callers = [asyncio.create_task(pipeline.fetchrow("SELECT pg_sleep(0.3)::text, $1::int", n)) for n in range(3)]
    await asyncio.sleep(0.1)  # the batch is on its way
    late = asyncio.create_task(pipeline.fetchrow("SELECT $1::int", 9))  # waits behind it
    await asyncio.sleep(0)
    for runner in [task for runners in pipeline._runners.values() for task in runners]:
        runner.cancel()

    results = await asyncio.wait_for(asyncio.gather(*callers, late, return_exceptions=True), timeout=5)

    assert all(isinstance(result, asyncio.CancelledError) for result in results), results
    await pipeline.close()
