"""The relay: copies bridge (outbox) rows to the external event bridge database (seed 001: a Supabase table).

At least once, exactly once in effect: each round locks the relay cursor row (`bridge_relay_state`, SKIP
LOCKED: one replica relays at a time), reads the next rows after the cursor, inserts them into the target
table with `ON CONFLICT (source_event_id, event_type) DO NOTHING`, commits the target, then advances the
cursor in the gateway's transaction. A crash between the two commits re-sends rows the target already has:
they are skipped. The cursor lives in the gateway database, so restarts (of the gateway or of the target)
resume where it stood. Bridge ids follow commit order (see gateway/bridge/events.py), so `id > cursor` never
skips a late commit.

Lag: `bridge_outbox_backlog` (rows after the cursor) and `bridge_relay_lag_seconds` (age of the oldest one),
refreshed after every round and by the background refresh of gateway/metrics_refresh.py, so they keep growing
while the target is down; the BridgeOutboxBacklogGrowing alert fires when the backlog keeps growing.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from gateway import keys, metrics
from gateway.bridge import events
from gateway.bridge.notify import BridgeWakeup
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.pool import connect

log = logging.getLogger("gateway.bridge.relay")

TARGET_NAME = "event_bridge"
MAX_BACKOFF_SECONDS = 60.0

# Target side: created when missing (the same DDL is documented for the Supabase project).
TARGET_DDL = """
CREATE TABLE IF NOT EXISTS bridge_events (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_event_id   bigint NOT NULL,
    event_type         text NOT NULL,
    user_id            text,
    app_source         text NOT NULL,
    payload            jsonb NOT NULL,
    metadata           jsonb NOT NULL,
    source_event_id    text NOT NULL,
    created_at         timestamptz NOT NULL,
    relayed_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_event_id, event_type)
)
"""
INSERT_TARGET = """
INSERT INTO bridge_events (gateway_event_id, event_type, user_id, app_source, payload, metadata,
                           source_event_id, created_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::text[],
                     $8::timestamptz[])
ON CONFLICT (source_event_id, event_type) DO NOTHING
"""

# Source side (the gateway database).
ENSURE_CURSOR = "INSERT INTO bridge_relay_state (target) VALUES ($1) ON CONFLICT (target) DO NOTHING"
LOCK_CURSOR = "SELECT last_id FROM bridge_relay_state WHERE target = $1 FOR UPDATE SKIP LOCKED"
ADVANCE_CURSOR = """
UPDATE bridge_relay_state SET last_id = $2, relayed = relayed + $3, updated_at = now() WHERE target = $1
"""
# Before the relay's first round there is no cursor row yet: every bridge event is waiting.
LAG = """
SELECT count(b.id) AS backlog,
       coalesce(extract(epoch FROM now() - min(b.created_at)), 0)::float8 AS lag_seconds
FROM bridge_events b
WHERE b.id > coalesce((SELECT last_id FROM bridge_relay_state WHERE target = $1), 0)
"""
_TARGET_ERRORS = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)


class RelayTargetError(Exception):
    """The external bridge database refused or lost the connection (its message is the error class only)."""


_ROUND_ERRORS: tuple[type[BaseException], ...] = (RelayTargetError, *UNAVAILABLE_ERRORS)


@dataclass(frozen=True, slots=True)
class RoundResult:
    copied: int
    skipped: bool = False  # another replica holds the cursor


class Relay:
    def __init__(
        self, pool: asyncpg.Pool, target_url: str, *, batch_size: int = 500, target_name: str = TARGET_NAME
    ) -> None:
        self.pool = pool
        self.target_url = target_url
        self.batch_size = batch_size
        self.target_name = target_name
        self._target: asyncpg.Connection | None = None

    async def _target_connection(self) -> asyncpg.Connection:
        if self._target is None or self._target.is_closed():
            self._target = await connect(self.target_url)  # orjson codecs for json/jsonb, like the pool
            await self._target.execute(TARGET_DDL)
        return self._target

    async def _drop_target(self) -> None:
        if self._target is not None:
            with contextlib.suppress(Exception):
                self._target.terminate()
            self._target = None

    async def run_once(self) -> RoundResult:
        """Copy one batch; raise on failure (the caller counts it and backs off)."""
        async with self.pool.acquire() as con:
            await con.execute(ENSURE_CURSOR, self.target_name)
            async with con.transaction():
                last_id = await con.fetchval(LOCK_CURSOR, self.target_name)
                if last_id is None:
                    return RoundResult(0, skipped=True)
                # Read on another connection, in its own short transaction: the reader's lock
                # (events.wait_for_writers) must not be held while the target database is written.
                async with self.pool.acquire() as reader:
                    rows = await events.page(reader, last_id, self.batch_size)
                if rows:
                    try:
                        target = await self._target_connection()
                        async with target.transaction():
                            await target.execute(
                                INSERT_TARGET,
                                *(
                                    list(column)
                                    for column in zip(
                                        *(
                                            (
                                                r.id,
                                                r.event_type,
                                                r.user_id,
                                                r.app_source,
                                                r.payload,
                                                r.metadata,
                                                r.source_event_id,
                                                r.created_at,
                                            )
                                            for r in rows
                                        ),
                                        strict=True,
                                    )
                                ),
                            )
                    except _TARGET_ERRORS as exc:
                        metrics.BRIDGE_RELAY_ERRORS.labels("target").inc()
                        await self._drop_target()
                        raise RelayTargetError(type(exc).__name__) from exc
                    await con.execute(ADVANCE_CURSOR, self.target_name, rows[-1].id, len(rows))
            await self.refresh_lag(con)
        metrics.BRIDGE_RELAYED.inc(len(rows))
        return RoundResult(len(rows))

    async def refresh_lag(self, con: asyncpg.Connection) -> None:
        row = await con.fetchrow(LAG, self.target_name)
        metrics.OUTBOX_BACKLOG.set(row["backlog"])
        metrics.BRIDGE_RELAY_LAG_SECONDS.set(row["lag_seconds"])

    async def drain(self) -> int:
        """Copy until nothing is left (used by tests and at startup)."""
        total = 0
        while True:
            result = await self.run_once()
            total += result.copied
            if result.copied < self.batch_size:
                return total

    async def close(self) -> None:
        if self._target is not None:
            with contextlib.suppress(Exception):
                await self._target.close()
            self._target = None

    async def run_forever(self, wakeup: BridgeWakeup, interval: float) -> None:
        failures = 0
        while True:
            try:
                await self.drain()
                failures = 0
            except asyncio.CancelledError:
                raise
            except _ROUND_ERRORS as exc:
                failures += 1
                if not isinstance(exc, RelayTargetError):
                    metrics.BRIDGE_RELAY_ERRORS.labels("source").inc()
                log.warning(
                    "bridge relay round failed; retrying with backoff",
                    extra={"code": str(exc) if isinstance(exc, RelayTargetError) else type(exc).__name__},
                )
                await asyncio.sleep(min(interval * 2 ** min(failures, 10), MAX_BACKOFF_SECONDS))
                continue
            except Exception:
                failures += 1
                metrics.BRIDGE_RELAY_ERRORS.labels("source").inc()
                log.exception("bridge relay round failed", extra={"code": "relay_error"})
                await asyncio.sleep(min(interval * 2 ** min(failures, 10), MAX_BACKOFF_SECONDS))
                continue
            await wakeup.wait(interval)


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """Runs the relay when EVENT_BRIDGE_DATABASE_URL is set."""
    settings = app[keys.SETTINGS]
    if not settings.event_bridge_database_url:
        yield
        return
    relay = Relay(app[keys.DB_POOL], settings.event_bridge_database_url, batch_size=settings.bridge_relay_batch_size)
    app[keys.GAUGE_REFRESH_HOOKS].append(relay.refresh_lag)  # backlog and lag, also while the target is down
    wakeup = BridgeWakeup(app[keys.DATABASE_URL])
    task = asyncio.create_task(relay.run_forever(wakeup, settings.bridge_relay_interval_seconds), name="bridge-relay")
    log.info("bridge relay started", extra={"reason": TARGET_NAME})
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wakeup.close()
    await relay.close()
