"""Reading the bridge (outbox) table: pages for other apps, and the newest id.

Bridge ids follow commit order: `UnitOfWork.flush` takes a transaction-scoped advisory lock before inserting
bridge rows, so a row with a smaller id is always committed before a row with a greater one becomes visible.
Reading `id > cursor` in id order therefore never skips an event that commits late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

PAGE = """
SELECT id, event_type, user_id, app_source, payload, metadata, source_event_id, created_at
FROM bridge_events
WHERE id > $1 AND ($3::text[] IS NULL OR event_type = ANY($3::text[]))
ORDER BY id
LIMIT $2
"""
MAX_ID = "SELECT coalesce(max(id), 0) FROM bridge_events"


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


async def page(con: asyncpg.Connection, after: int, limit: int, types: list[str] | None = None) -> list[BridgeRow]:
    rows = await con.fetch(PAGE, after, limit, types)
    return [BridgeRow(**dict(row)) for row in rows]
