"""Reading the bridge (outbox) table: pages for other apps, and the newest id.

Paging with `id > cursor` must never skip a row that commits late with a smaller id. Writers hold an advisory
lock in shared mode from the moment they draw a bridge id until they commit (gateway/bridge/outbox.py); a reader takes
it in exclusive mode first (`wait_for_writers`), in its own transaction, which waits for those writers to end and
holds new ones back for the few milliseconds of the read. Every id drawn before the read is then final.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.bridge.outbox import BRIDGE_LOCK_KEY

PAGE = """
SELECT id, event_type, user_id, app_source, payload, metadata, source_event_id, created_at
FROM bridge_events
WHERE id > $1 AND ($3::text[] IS NULL OR event_type = ANY($3::text[]))
ORDER BY id
LIMIT $2
"""
MAX_ID = "SELECT coalesce(max(id), 0) FROM bridge_events"
WAIT_FOR_WRITERS = "SELECT pg_advisory_xact_lock($1)"


@dataclass(frozen=True, slots=True)
class BridgeRow:
    id: int
    event_type: str
    user_id: str | None
    app_source: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    source_event_id: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "user_id": self.user_id,
            "app_source": self.app_source,
            "payload": self.payload,
            "metadata": self.metadata,
            "source_event_id": self.source_event_id,
            "created_at": self.created_at.isoformat(),
        }


async def wait_for_writers(con: asyncpg.Connection) -> None:
    """Inside a transaction, before reading bridge rows by id: every bridge id drawn so far is then committed or
    rolled back (the read must be a later statement: its snapshot is taken after the lock)."""
    await con.execute(WAIT_FOR_WRITERS, BRIDGE_LOCK_KEY)


async def page(con: asyncpg.Connection, after: int, limit: int, types: list[str] | None = None) -> list[BridgeRow]:
    async with con.transaction():
        await wait_for_writers(con)
        rows = await con.fetch(PAGE, after, limit, types)
    return [BridgeRow(**dict(row)) for row in rows]
