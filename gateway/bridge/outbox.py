"""Writing the bridge (transactional outbox): the ONE publish function.

Every bridge event is validated against the schema registry (gateway/bridge/registry.py) and written in the
transaction of the change it announces; an invalid one raises `BridgeSchemaError`, which rolls that transaction
back. A new row is announced with NOTIFY, which PostgreSQL delivers only when the transaction commits.

Writers take the bridge lock in shared mode before they draw an id, so they never wait for each other; readers
take it exclusive before they page with `id > cursor` (gateway/bridge/events.py), which waits until every
transaction that has drawn a bridge id has ended: no row can then commit late with a smaller id.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg

from gateway.bridge.registry import validate_event

BRIDGE_CHANNEL = "bridge_events"
# `origin`: webhook for what a Stripe event changed, api for what the gateway's own API announces (a subscription
# checkout's `pending`, whose source id is the Checkout Session's).
Origin = Literal["webhook", "api"]
BRIDGE_LOCK_KEY = 0x6272_6964_6765

# One statement: the shared lock, the row (once per Stripe event and type), and its announcement.
PUBLISH = """
WITH lock AS (SELECT pg_advisory_xact_lock_shared($7)),
written AS (
    INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
    SELECT $1, $2, $3, $4, $5, $6 FROM lock
    ON CONFLICT (source_event_id, event_type) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify($8, id::text || ':' || $1) FROM written
"""


async def publish(
    con: asyncpg.Connection,
    *,
    event_type: str,
    user_id: str | None,
    payload: dict[str, Any],
    source_event_id: str,
    app_source: str,
    origin: Origin = "webhook",
) -> bool:
    """Validate and write one bridge event in the caller's transaction; False when this source (a Stripe event,
    or the object the API announces) already published one of this type."""
    payload = {**payload, "source": "stripe"}
    metadata = {"version": "v1", "origin": origin}
    validate_event(event_type, user_id, payload, metadata)
    row = await con.fetchrow(
        PUBLISH,
        event_type,
        user_id,
        app_source,
        payload,
        metadata,
        source_event_id,
        BRIDGE_LOCK_KEY,
        BRIDGE_CHANNEL,
    )
    return row is not None
