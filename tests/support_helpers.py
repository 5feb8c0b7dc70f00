"""Helpers for the support CLI tests: run a `gateway ...` command in-process, ingest like a delivery, wait for a
condition."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.cli import build_parser
from gateway.settings import Settings
from gateway.webhooks.envelope import parse_event
from gateway.webhooks.ledger import IngestResult, ingest
from tests.stripe_events import event_body


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def _run(argv: list[str], settings: Settings) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
            code = args.func(args, settings)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())


async def run_cli(argv: list[str], settings: Settings) -> CliResult:
    """`gateway <argv>` through the real parser and command function (its own event loop, in a thread)."""
    return await asyncio.to_thread(_run, argv, settings)


async def deliver(
    pool: asyncpg.Pool,
    event: dict[str, Any],
    *,
    handlers_enabled: bool = True,
    request_id: str = "req-test-0001",
) -> IngestResult:
    """Ingest `event` exactly as the webhook view does after the signature check."""
    parsed = parse_event(event_body(event), required_livemode=None)
    return await ingest(
        pool,
        parsed,
        request_id=request_id,
        handlers_enabled=handlers_enabled,
        app_source="website",
    )


async def ledger_row(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    async with pool.acquire() as con:
        return await con.fetchrow("SELECT * FROM webhook_events WHERE stripe_event_id = $1", event_id)


async def stock_of(pool: asyncpg.Pool, product_id: int) -> int:
    async with pool.acquire() as con:
        value: int = await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product_id)
        return value


async def order_status(pool: asyncpg.Pool, order_id: str) -> str:
    async with pool.acquire() as con:
        value: str = await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order_id)
        return value


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as con:
        return {
            table: await con.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("audit_log", "bridge_events", "webhook_events", "payments")
        }


async def poll(check: Any, *, within: float, interval: float = 0.05) -> Any:
    """Call `check()` until it returns something truthy; a bounded loop."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within} s")
        await asyncio.sleep(interval)
