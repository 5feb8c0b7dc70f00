"""Graceful shutdown of `gateway serve` on SIGTERM, as Kubernetes does it: /ready turns 503 while the listener
still answers, the request in flight finishes with its normal answer, the process exits 0 within the grace
period.

The request in flight is a real webhook delivery held by the database: the test locks the ledger table, so the
delivery's INSERT waits until the test lets it go.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.settings import SETTING_FIELDS
from tests.conftest import BASE_ENV, TEST_WEBHOOK_SECRET
from tests.stripe_events import make_event, signed_event
from tests.support_helpers import poll

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DRAIN_SECONDS = 1.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0
GRACE_PERIOD_SECONDS = 30.0  # Kubernetes' default terminationGracePeriodSeconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(url: str) -> tuple[int, str] | None:
    """One GET on a fresh connection; None when nothing accepts connections there."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status, await response.text()
    except aiohttp.ClientConnectorError:
        return None


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in SETTING_FIELDS}}
    env.update(BASE_ENV)
    env.update(
        {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
            "DB_COMMAND_TIMEOUT": "30",
            "GATEWAY_ENV_FILE": str(tmp_path / "absent.env"),
            "PYTHONPATH": str(ROOT),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    info = {"process": process, "base": base, "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    try:
        await poll(lambda: get(base + "/health"), within=30, interval=0.1)
        yield info
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_drains_then_exits_cleanly(gateway: dict[str, Any], database_url: str) -> None:
    process, base = gateway["process"], gateway["base"]
    assert await get(base + "/ready") == (200, '{"status":"ready"}')
    metrics = await get(gateway["metrics"])
    assert metrics and "gateway_ready 1.0" in metrics[1]

    event = make_event("customer.created", {"id": "cus_shutdown", "object": "customer"})
    body, headers = signed_event(event, TEST_WEBHOOK_SECRET)
    blocker = await asyncpg.connect(database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE webhook_events IN EXCLUSIVE MODE")  # the delivery's INSERT will wait
    session = aiohttp.ClientSession()
    try:
        in_flight = asyncio.create_task(
            session.post(base + "/stripe/webhook", data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=60))
        )

        async def delivery_waits_on_the_lock() -> bool:
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stripe-gateway' "
                "AND wait_event_type = 'Lock' AND datname = current_database()"
            )
            return bool(waiting)

        await poll(delivery_waits_on_the_lock, within=15)

        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)

        # 1. Readiness fails first, while the listener still accepts connections.
        async def ready_is_503() -> tuple[int, str] | None:
            answer = await get(base + "/ready")
            assert answer is not None, "the listener closed before /ready reported draining"
            return answer if answer[0] == 503 else None

        _, text = await poll(ready_is_503, within=DRAIN_SECONDS * 3)
        assert '"draining"' in text and '"not_ready"' in text
        assert await get(base + "/health") == (200, '{"status":"ok"}')  # still alive while draining
        metrics = await get(gateway["metrics"])
        assert metrics and "gateway_ready 0.0" in metrics[1]

        # 2. After the drain the listener closes; the delivery is still waiting on the lock.
        async def listener_closed() -> bool:
            return await get(base + "/health") is None

        await poll(listener_closed, within=DRAIN_SECONDS + 5)
        assert time.monotonic() - sigterm_at >= DRAIN_SECONDS * 0.9
        assert not in_flight.done()
        assert process.returncode is None

        # 3. Let the delivery go: it completes with its normal answer, then the process exits 0.
        await lock.rollback()
        response = await asyncio.wait_for(in_flight, timeout=SHUTDOWN_TIMEOUT_SECONDS)
        assert response.status == 200
        assert await response.json() == {"status": "ignored", "event_id": event["id"]}
        response.release()
        code = await asyncio.wait_for(process.wait(), timeout=GRACE_PERIOD_SECONDS)
        assert code == 0
        assert time.monotonic() - sigterm_at < GRACE_PERIOD_SECONDS
    finally:
        await session.close()
        if not blocker.is_closed():
            await blocker.close()

    status_row = await asyncpg.connect(database_url)
    try:
        assert (
            await status_row.fetchval("SELECT status FROM webhook_events WHERE stripe_event_id = $1", event["id"])
            == "ignored"
        )
    finally:
        await status_row.close()
    assert process.stdout is not None
    output = (await process.stdout.read()).decode()
    for message in ("shutdown: draining", "shutdown: closing listener", "shutdown complete"):
        assert message in output, output[-3000:]


async def test_sigterm_when_idle_exits_after_the_drain(gateway: dict[str, Any]) -> None:
    process = gateway["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), timeout=GRACE_PERIOD_SECONDS)
    assert code == 0
    assert time.monotonic() - started >= DRAIN_SECONDS * 0.9
