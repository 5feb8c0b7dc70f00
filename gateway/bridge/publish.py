"""Bridge events the API publishes itself, outside any webhook: a subscription checkout's `pending` status.

Webhook-driven events are written by the unit of work (gateway/unit_of_work.py) with the ledger row. An event
the API publishes has no Stripe event: its `source_event_id` is the Stripe object it announces (the checkout
session id), its metadata says `origin: api`, and it is written in the caller's transaction with the same
guarantees: validated against the registry first (an invalid event fails the transaction), the bridge lock taken
in shared mode before the id is drawn (readers paging by id never skip it), and announced with NOTIFY, which
PostgreSQL delivers only on commit.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway import metrics
from gateway.bridge.registry import validate_event
from gateway.unit_of_work import BRIDGE_CHANNEL, BRIDGE_LOCK_KEY

API_METADATA = {"version": "v1", "origin": "api"}

TAKE_BRIDGE_LOCK = "SELECT pg_advisory_xact_lock_shared($1)"
INSERT_BRIDGE_EVENT = """
INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (source_event_id, event_type) DO NOTHING
RETURNING id
"""
ANNOUNCE = "SELECT pg_notify($1, $2::bigint::text || ':' || $3)"


async def publish_from_api(
    con: asyncpg.Connection,
    event_type: str,
    user_id: str | None,
    payload: dict[str, Any],
    *,
    app_source: str,
    source_id: str,
) -> bool:
    """Write one bridge event in the caller's open transaction; False when `source_id` already published it."""
    if not con.is_in_transaction():
        raise RuntimeError("publish_from_api needs the caller's transaction")
    body = {**payload, "source": "stripe"}
    validate_event(event_type, user_id, body, API_METADATA)
    await con.execute(TAKE_BRIDGE_LOCK, BRIDGE_LOCK_KEY)
    bridge_id = await con.fetchval(INSERT_BRIDGE_EVENT, event_type, user_id, app_source, body, API_METADATA, source_id)
    if bridge_id is None:
        return False
    await con.execute(ANNOUNCE, BRIDGE_CHANNEL, bridge_id, event_type)
    metrics.BRIDGE_EVENTS_PUBLISHED.labels(event_type).inc()
    return True
