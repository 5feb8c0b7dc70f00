"""A unit of work: the audit rows and bridge (outbox) events a business change produces, written in the same
transaction as the change.

Business code records what happened (`unit.audit(...)`, `unit.publish(...)`); `flush()` writes everything in one
statement, together with the final state of the webhook ledger row when there is one, and announces new bridge
events with NOTIFY (delivered by PostgreSQL only when the transaction commits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from gateway import metrics
from gateway.bridge.registry import validate_event

BRIDGE_CHANNEL = "bridge_events"
BRIDGE_METADATA = {"version": "v1", "origin": "webhook"}
# Taken (transaction-scoped) before bridge rows are written: bridge ids then follow commit order, so readers
# and the relay page with `id > cursor` without ever skipping a row committed late (gateway/bridge/events.py).
# The lock is part of FLUSH: the `bridge_lock` CTE is joined into the bridge INSERT, so it is held before the
# first bridge id is drawn, and it is only taken when there is something to publish.
BRIDGE_LOCK_KEY = 0x6272_6964_6765

FLUSH = """
WITH audit AS (
    INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
    SELECT $1, a.action, a.subject_type, a.subject_id, a.order_id, $2, $3, a.details
    FROM unnest($4::text[], $5::text[], $6::text[], $7::uuid[], $8::jsonb[])
         AS a(action, subject_type, subject_id, order_id, details)
), bridge_lock AS (
    SELECT pg_advisory_xact_lock($19) WHERE cardinality($11::text[]) > 0
), bridge AS (
    INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
    SELECT b.event_type, b.user_id, $9, b.payload, $10, $2
    FROM unnest($11::text[], $12::text[], $13::jsonb[]) AS b(event_type, user_id, payload)
    CROSS JOIN bridge_lock
    ON CONFLICT (source_event_id, event_type) DO NOTHING
    RETURNING id, event_type
), ledger AS (
    UPDATE webhook_events SET
        status = $16,
        outcome_reason = $17,
        order_id = coalesce($18::uuid, order_id),
        processed_at = CASE WHEN $16 = 'received' THEN NULL ELSE now() END,
        last_error = NULL
    WHERE id = $15
)
SELECT count(pg_notify($14, bridge.id::text || ':' || bridge.event_type)) AS published,
       coalesce(array_agg(bridge.event_type), '{}') AS types
FROM bridge
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    subject_type: str
    subject_id: str
    order_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    event_type: str
    user_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    """The final state of the webhook ledger row this unit of work settles."""

    ledger_id: int
    status: str
    reason: str | None
    order_id: str | None


@dataclass
class UnitOfWork:
    con: asyncpg.Connection
    actor: str
    source_event_id: str  # the Stripe event id, or a synthetic id for changes not caused by an event
    request_id: str | None
    app_source: str = "website"
    audits: list[AuditEntry] = field(default_factory=list)
    events: list[BridgeEvent] = field(default_factory=list)

    def audit(
        self, action: str, subject_type: str, subject_id: str, *, order_id: str | None = None, **details: Any
    ) -> None:
        self.audits.append(AuditEntry(action, subject_type, subject_id, order_id, details))

    def publish(self, event_type: str, user_id: str | None, payload: dict[str, Any]) -> None:
        event = BridgeEvent(event_type, user_id, {**payload, "source": "stripe"})
        validate_event(event.event_type, event.user_id, event.payload, BRIDGE_METADATA)  # invalid: tx fails
        self.events.append(event)

    async def flush(self, ledger: LedgerOutcome | None = None) -> int:
        """Write the collected rows (and settle the ledger row); return how many bridge events were new."""
        if not self.audits and not self.events and ledger is None:
            return 0
        row = await self.con.fetchrow(
            FLUSH,
            self.actor,
            self.source_event_id,
            self.request_id,
            [a.action for a in self.audits],
            [a.subject_type for a in self.audits],
            [a.subject_id for a in self.audits],
            [a.order_id for a in self.audits],
            [a.details for a in self.audits],
            self.app_source,
            BRIDGE_METADATA,
            [e.event_type for e in self.events],
            [e.user_id for e in self.events],
            [e.payload for e in self.events],
            BRIDGE_CHANNEL,
            ledger.ledger_id if ledger else None,
            ledger.status if ledger else None,
            ledger.reason if ledger else None,
            ledger.order_id if ledger else None,
            BRIDGE_LOCK_KEY,
        )
        self.audits.clear()
        self.events.clear()
        for event_type in row["types"]:
            metrics.BRIDGE_EVENTS_PUBLISHED.labels(event_type).inc()
        published: int = row["published"]
        return published
