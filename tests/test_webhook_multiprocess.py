"""Two real gateway processes on one database receive the same signed events at once: every effect happens once."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import BASE_ENV, TEST_WEBHOOK_SECRET
from tests.stripe_events import checkout_session, make_event, payment_intent, signed_event
from tests.webhook_support import WEBHOOK, bridge_types, seed_order, stock_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"gateway on {port} not healthy in {START_TIMEOUT}s: {log.read_text()[-2000:]}")


@pytest.fixture
def gateways(database_url: str, tmp_path: Path) -> Iterator[list[int]]:
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for index in range(2):
            port = _free_port()
            env = {
                **os.environ,
                **BASE_ENV,
                "DATABASE_URL": database_url,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "METRICS_PORT": "0",
                "WORKERS": "1",
                "LOG_LEVEL": "WARNING",
                "DB_POOL_MAX": "10",
                "RATE_LIMIT_WEBHOOK_MAX": "100000",
                "SHUTDOWN_DRAIN_SECONDS": "0",
                "SHUTDOWN_TIMEOUT_SECONDS": "1",
            }
            log = tmp_path / f"gateway-{index}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", "serve"],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            ports.append(port)
        for port, proc, index in zip(ports, procs, range(2), strict=True):
            _wait_healthy(port, proc, tmp_path / f"gateway-{index}.log")
        yield ports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


async def test_two_processes_apply_each_event_once(gateways: list[int], db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = [await seed_order(con, stock=100, quantity=2) for _ in range(15)]
        # one more order per process, paid through that process only: both processes write payments whichever
        # wins the races below (under group commit one process may well settle every shared event first)
        own = [await seed_order(con, stock=100, quantity=2) for _ in gateways]
    events: list[dict[str, Any]] = []
    for i, order in enumerate(seeded):
        if i % 3 == 2:
            events.append(
                make_event(
                    "checkout.session.expired",
                    checkout_session(order.order_id, status="expired", payment_status="unpaid"),
                )
            )
            events.append(
                make_event(
                    "payment_intent.payment_failed",
                    payment_intent(order.order_id, status="requires_payment_method", failure_code="card_declined"),
                )
            )
        else:
            events.append(make_event("checkout.session.completed", checkout_session(order.order_id)))
            events.append(make_event("payment_intent.succeeded", payment_intent(order.order_id)))
    assert len(events) == 30
    deliveries = [(event, port) for event in events for port in gateways]  # each event to both processes
    own_events = [make_event("payment_intent.succeeded", payment_intent(order.order_id)) for order in own]
    deliveries += list(zip(own_events, gateways, strict=True))
    random.Random(7).shuffle(deliveries)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def send(event: dict[str, Any], port: int) -> tuple[str, int, str]:
            body, headers = signed_event(event, TEST_WEBHOOK_SECRET)
            async with session.post(f"http://127.0.0.1:{port}{WEBHOOK}", data=body, headers=headers) as response:
                payload = await response.json()
                assert response.status == 200, payload
                return event["id"], port, payload["status"]

        results = await asyncio.gather(*(send(e, p) for e, p in deliveries))

    by_event: dict[str, list[str]] = {}
    for event_id, _port, status in results:
        by_event.setdefault(event_id, []).append(status)
    for event in own_events:
        assert by_event.pop(str(event["id"])) == ["processed"]
    for event_id, statuses in by_event.items():
        # one process applied it (processed, or stale for a failure after the expiry), the other saw a duplicate
        assert sorted(statuses) in (["duplicate", "processed"], ["duplicate", "stale"]), (event_id, statuses)
    served_by = {port for _e, port, status in results if status != "duplicate"}
    assert served_by == set(gateways)  # both processes really did work

    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 32
        assert await con.fetchval("SELECT count(*) FROM webhook_events WHERE attempts <> 1") == 0
        assert await con.fetchval("SELECT count(*) FROM bridge_events WHERE event_type = 'ORDER_PAID'") == 12
        for i, order in enumerate(seeded):
            types = await bridge_types(con, order.order_id)
            status = await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order.order_id)
            if i % 3 == 2:
                assert status == "expired"
                assert sorted(types) in (["ORDER_EXPIRED"], ["ORDER_EXPIRED", "ORDER_PAYMENT_FAILED"])
                assert await stock_of(con, order.product_ids[0]) == (100, 0, 0)
            else:
                assert status == "paid" and types == ["ORDER_PAID"]
                assert await stock_of(con, order.product_ids[0]) == (98, 0, 2)
