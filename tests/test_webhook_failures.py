"""Failures: a handler exception rolls back and is retried; a database that disappears answers 503 and the same
delivery is processed exactly once when it comes back; 200 is never sent before the commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from gateway.app import create_app
from gateway.webhooks.handlers import HANDLERS
from tests.conftest import make_settings
from tests.stripe_events import make_event, payment_intent
from tests.webhook_support import (
    audit_actions,
    bridge_types,
    ledger_row,
    order_row,
    post_event,
    seed_order,
    stock_of,
)


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory(RATE_LIMIT_WEBHOOK_MAX="100000"))


# ------------------------------------------------------------------ handler exceptions


async def test_handler_exception_rolls_back_and_the_retry_processes(
    client: Any, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    real = HANDLERS["payment_intent.succeeded"]

    async def explode_after_the_work(unit: Any, ev: Any) -> Any:
        await real(unit, ev)  # order paid, stock committed, payment row, audit and bridge written, not committed
        raise RuntimeError("boom after the business changes")

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", explode_after_the_work)
    response = await post_event(client, event)

    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "webhook_processing_failed"
    assert error["request_id"] == response.headers["X-Request-ID"]
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "pending" and order["paid_at"] is None
        assert order["stripe_payment_intent_id"] is None
        assert await stock_of(con, seeded.product_ids[0]) == (3, 2, 0)
        assert await con.fetchval("SELECT count(*) FROM payments") == 0
        assert await bridge_types(con, seeded.order_id) == []
        assert await audit_actions(con, seeded.order_id) == []
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None
        assert (ledger["status"], ledger["attempts"]) == ("failed", 1)
        assert ledger["last_error"] == "RuntimeError: boom after the business changes"
        assert ledger["processed_at"] is None

    # Stripe retries: the failed row is claimed again, not answered as a duplicate.
    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", real)
    response = await post_event(client, event)
    assert response.status == 200 and (await response.json())["status"] == "processed"
    response = await post_event(client, event)
    assert (await response.json())["status"] == "duplicate"
    async with db_pool.acquire() as con:
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None
        assert (ledger["status"], ledger["attempts"], ledger["last_error"]) == ("processed", 2, None)
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        assert await con.fetchval("SELECT count(*) FROM payments") == 1


async def test_concurrent_retries_of_a_failed_event_apply_once(
    client: Any, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    real = HANDLERS["payment_intent.succeeded"]

    async def explode(unit: Any, ev: Any) -> Any:
        raise RuntimeError("first attempt fails")

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", explode)
    assert (await post_event(client, event)).status == 500
    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", real)

    responses = await asyncio.gather(*(post_event(client, event) for _ in range(20)))
    statuses = sorted([(r.status, (await r.json())["status"]) for r in responses])
    assert statuses.count((200, "processed")) == 1 and statuses.count((200, "duplicate")) == 19
    async with db_pool.acquire() as con:
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None and (ledger["status"], ledger["attempts"]) == ("processed", 2)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)


async def test_a_200_is_only_sent_after_the_commit(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        orders = [await seed_order(con, stock=5, quantity=1) for _ in range(20)]
    events = [make_event("payment_intent.succeeded", payment_intent(o.order_id)) for o in orders]

    async def deliver_and_look(event: dict[str, Any]) -> None:
        response = await post_event(client, event)
        assert response.status == 200
        # the moment the 200 is in hand, another connection must see the committed ledger row and its effects
        async with db_pool.acquire() as con:
            ledger = await ledger_row(con, event["id"])
            assert ledger is not None and ledger["status"] == "processed"
            assert await con.fetchval("SELECT status FROM orders WHERE id = $1", ledger["order_id"]) == "paid"
            assert await con.fetchval("SELECT count(*) FROM bridge_events WHERE source_event_id = $1", event["id"]) == 1

    await asyncio.gather(*(deliver_and_look(e) for e in events))


# ------------------------------------------------------------------ the database goes away


class TcpProxy:
    """127.0.0.1:<port> -> PostgreSQL (over TCP, or its Unix socket for the embedded server); `cut()` drops every
    connection and refuses new ones, `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self.target
            if host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0.05)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]  # embedded server: ?host=/path/of/socket
    proxy = TcpProxy(socket_dir or parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def proxied_client(aiohttp_client: Any, database_url: str, proxy: TcpProxy) -> Callable[[], Any]:
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    # through the proxy over TCP, whatever the server's own address (the embedded one has only a Unix socket)
    url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query=""))
    settings = make_settings(
        DB_ACQUIRE_TIMEOUT="2",
        DB_COMMAND_TIMEOUT="2",
        DB_LOCK_TIMEOUT="1",
        DB_POOL_MIN="1",
        DB_POOL_MAX="4",
        RATE_LIMIT_WEBHOOK_MAX="100000",
    )

    async def make() -> Any:
        return await aiohttp_client(create_app(settings, database_url=url))

    return make


async def _expect_503(response: Any) -> None:
    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 0
    body = await response.json()
    assert body["error"]["code"] == "database_unavailable"


async def test_database_down_answers_503_then_the_same_delivery_applies_once(
    proxied_client: Callable[[], Any], proxy: TcpProxy, db_pool: asyncpg.Pool
) -> None:
    client = await proxied_client()
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))

    await proxy.cut()
    await _expect_503(await post_event(client, event))
    await _expect_503(await post_event(client, event))
    async with db_pool.acquire() as con:  # the direct pool still reaches the database: nothing was acknowledged
        assert await ledger_row(con, event["id"]) is None
        assert (await order_row(con, seeded.order_id))["status"] == "pending"

    await proxy.restore()
    response = await post_event(client, event)
    assert response.status == 200 and (await response.json())["status"] == "processed"
    response = await post_event(client, event)
    assert response.status == 200 and (await response.json())["status"] == "duplicate"
    async with db_pool.acquire() as con:
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None and (ledger["status"], ledger["attempts"]) == ("processed", 1)
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]


async def test_database_lost_in_the_middle_of_the_transaction(
    proxied_client: Callable[[], Any], proxy: TcpProxy, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await proxied_client()
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    real = HANDLERS["payment_intent.succeeded"]

    async def cut_midway(unit: Any, ev: Any) -> Any:
        outcome = await real(unit, ev)  # the ledger row is claimed and the order changed, not committed
        await proxy.cut()
        return outcome

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", cut_midway)
    await _expect_503(await post_event(client, event))
    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", real)
    async with db_pool.acquire() as con:
        assert await ledger_row(con, event["id"]) is None  # no failure row either: the database was gone
        assert (await order_row(con, seeded.order_id))["status"] == "pending"
        assert await stock_of(con, seeded.product_ids[0]) == (3, 2, 0)
        assert await bridge_types(con, seeded.order_id) == []

    await _expect_503(await post_event(client, event))  # still down
    await proxy.restore()
    response = await post_event(client, event)
    assert response.status == 200 and (await response.json())["status"] == "processed"
    async with db_pool.acquire() as con:
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None and (ledger["status"], ledger["attempts"]) == ("processed", 1)
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        assert await con.fetchval("SELECT count(*) FROM payments") == 1
