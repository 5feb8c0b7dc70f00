"""Writing the bridge (transactional outbox): the ONE publish function.

Every bridge event is validated against the schema registry (gateway/bridge/registry.py) and written in the
transaction of the change it announces; an invalid one raises `BridgeSchemaError`, which rolls that transaction
back. Once the transaction has committed, the caller announces the new rows (`announce`: NOTIFY, a wake-up hint;
readers also poll). NOTIFY inside the writing transaction would hold PostgreSQL's notification queue lock through
the commit's WAL flush, serialising every webhook commit behind the others.

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

# One statement: the shared lock, then the row (once per source and type).
PUBLISH = """
INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
SELECT $1, $2, $3, $4, $5, $6 FROM (SELECT pg_advisory_xact_lock_shared($7)) AS locked
ON CONFLICT (source_event_id, event_type) DO NOTHING
RETURNING id
"""
# After the commit: one notification per new row, "<id>:<type>".
ANNOUNCE = "SELECT pg_notify($1, a) FROM unnest($2::text[]) AS a"


async def publish(
    con: asyncpg.Connection,
    *,
    event_type: str,
    user_id: str | None,
    payload: dict[str, Any],
    source_event_id: str,
    app_source: str,
    origin: Origin = "webhook",
) -> str | None:
    """Validate and write one bridge event in the caller's transaction. Returns its announcement ("<id>:<type>",
    for `announce` once committed), or None when this source (a Stripe event, or the object the API announces)
    already published one of this type."""
    payload = {**payload, "source": "stripe"}
    metadata = {"version": "v1", "origin": origin}
    validate_event(event_type, user_id, payload, metadata)
    bridge_id = await con.fetchval(
        PUBLISH, event_type, user_id, app_source, payload, metadata, source_event_id, BRIDGE_LOCK_KEY
    )
    return None if bridge_id is None else f"{bridge_id}:{event_type}"


async def announce(con: asyncpg.Connection, announcements: list[str]) -> None:
    """Wake the bridge's readers for rows just committed (outside any transaction). A hint only: a lost
    announcement delays them until their next poll, it loses nothing."""
    if announcements:
        await con.execute(ANNOUNCE, BRIDGE_CHANNEL, announcements)
