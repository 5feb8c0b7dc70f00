"""The webhook ledger and the one transaction per delivery.

    claim the ledger row (new, or a failed/received one to retry)   -- else: duplicate, nothing changes
    run the handler: lock the order, apply the transition, stock, payments
    flush audit rows and bridge events, mark the ledger row processed / ignored / stale
    COMMIT                                                           -- only then does the view answer 200

Concurrent deliveries of one event: the second INSERT waits on the first one's row lock, then finds it
processed and answers duplicate. A handler exception rolls everything back; the failure is then recorded in
its own short transaction so the next delivery (or `gateway events replay`) processes the event again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from gateway import stripe_payload as sp
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.unit_of_work import BRIDGE_CHANNEL, BRIDGE_METADATA, UnitOfWork
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers import HANDLERS, Outcome

log = logging.getLogger("gateway.webhooks")

LedgerStatus = Literal["processed", "ignored", "stale", "received", "duplicate"]

# Insert the row, or take back a row whose earlier attempt failed (or that the kill switch left received).
# No row back means the event was already processed/ignored/stale: a duplicate.
CLAIM_EVENT = """
INSERT INTO webhook_events (
    stripe_event_id, type, api_version, livemode, stripe_created, status, attempts, request_id,
    order_id, checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload)
VALUES ($1, $2, $3, $4, $5, 'received', 1, $6, $7::uuid, $8, $9, $10, $11, $12, $13)
ON CONFLICT (stripe_event_id) DO UPDATE SET
    attempts = webhook_events.attempts + 1,
    request_id = EXCLUDED.request_id
WHERE webhook_events.status IN ('failed', 'received')
RETURNING id
"""

FINISH_EVENT = """
UPDATE webhook_events SET
    status = $2,
    outcome_reason = $3,
    order_id = coalesce($4::uuid, order_id),
    processed_at = CASE WHEN $2 = 'received' THEN NULL ELSE now() END,
    last_error = NULL
WHERE id = $1
"""

# The unit of work's audit rows and bridge events (gateway.unit_of_work.FLUSH) and the FINISH_EVENT update in
# ONE statement: one round trip less per processed event, same transaction, same NOTIFY-on-commit.
FLUSH_AND_FINISH = """
WITH audit AS (
    INSERT INTO audit_log (
        actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
    SELECT $1, a.action, a.subject_type, a.subject_id, a.order_id, $2, $3, a.details
    FROM unnest($4::text[], $5::text[], $6::text[], $7::uuid[], $8::jsonb[])
         AS a(action, subject_type, subject_id, order_id, details)
), bridge AS (
    INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
    SELECT b.event_type, b.user_id, $9, b.payload, $10, $2
    FROM unnest($11::text[], $12::text[], $13::jsonb[]) AS b(event_type, user_id, payload)
    ON CONFLICT (source_event_id, event_type) DO NOTHING
    RETURNING id, event_type
), notified AS (
    SELECT count(pg_notify($14, bridge.id::text || ':' || bridge.event_type)) AS published FROM bridge
)
UPDATE webhook_events SET
    status = $16,
    outcome_reason = $17,
    order_id = coalesce($18::uuid, order_id),
    processed_at = now(),
    last_error = NULL
FROM notified
WHERE id = $15
"""

RECORD_FAILURE = """
INSERT INTO webhook_events (
    stripe_event_id, type, api_version, livemode, stripe_created, status, attempts, request_id,
    order_id, checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload,
    last_error)
VALUES ($1, $2, $3, $4, $5, 'failed', 1, $6, $7::uuid, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (stripe_event_id) DO UPDATE SET
    status = 'failed',
    attempts = webhook_events.attempts + 1,
    request_id = EXCLUDED.request_id,
    last_error = EXCLUDED.last_error
WHERE webhook_events.status IN ('failed', 'received')
"""


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: LedgerStatus
    reason: str | None = None
    order_id: str | None = None


class HandlerFailed(Exception):
    """A handler raised: the business changes were rolled back and the failure recorded for a retry."""


def _row_values(event: StripeEvent, request_id: str | None) -> list[object]:
    ids = sp.related_ids(event.type, event.object)
    return [
        event.id,
        event.type,
        event.api_version,
        event.livemode,
        datetime.fromtimestamp(event.created, UTC),
        request_id,
        ids.order_id,
        ids.checkout_session_id,
        ids.payment_intent_id,
        ids.charge_id,
        ids.subscription_id,
        ids.customer_id,
        event.raw,
    ]


async def process_claimed(
    con: asyncpg.Connection, ledger_id: int, event: StripeEvent, *, request_id: str | None, app_source: str
) -> IngestResult:
    """Run the handler for a claimed ledger row inside the caller's transaction and finish the row."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        outcome = Outcome("ignored", "event type not handled")
    else:
        unit = UnitOfWork(con, actor="stripe", source_event_id=event.id, request_id=request_id, app_source=app_source)
        outcome = await handler(unit, event)
        if unit.audits or unit.events:
            await con.execute(
                FLUSH_AND_FINISH,
                unit.actor,
                unit.source_event_id,
                unit.request_id,
                [a.action for a in unit.audits],
                [a.subject_type for a in unit.audits],
                [a.subject_id for a in unit.audits],
                [a.order_id for a in unit.audits],
                [a.details for a in unit.audits],
                unit.app_source,
                BRIDGE_METADATA,
                [e.event_type for e in unit.events],
                [e.user_id for e in unit.events],
                [e.payload for e in unit.events],
                BRIDGE_CHANNEL,
                ledger_id,
                outcome.status,
                outcome.reason,
                outcome.order_id,
            )
            unit.audits.clear()
            unit.events.clear()
            return IngestResult(outcome.status, outcome.reason, outcome.order_id)
    await con.execute(FINISH_EVENT, ledger_id, outcome.status, outcome.reason, outcome.order_id)
    return IngestResult(outcome.status, outcome.reason, outcome.order_id)


async def ingest(
    pool: asyncpg.Pool, event: StripeEvent, *, request_id: str | None, handlers_enabled: bool, app_source: str
) -> IngestResult:
    async with pool.acquire() as con:
        try:
            async with con.transaction():
                ledger_id = await con.fetchval(CLAIM_EVENT, *_row_values(event, request_id))
                if ledger_id is None:
                    return IngestResult("duplicate")
                if not handlers_enabled:
                    # Kill switch: verified and durable, applied later by `gateway events replay --pending`.
                    await con.execute(FINISH_EVENT, ledger_id, "received", "handlers disabled", None)
                    return IngestResult("received", "handlers disabled")
                return await process_claimed(con, ledger_id, event, request_id=request_id, app_source=app_source)
        except UNAVAILABLE_ERRORS:
            raise  # 503: Stripe retries; nothing was committed
        except Exception as exc:
            await _record_failure(con, event, request_id, exc)
            raise HandlerFailed(type(exc).__name__) from exc


async def _record_failure(
    con: asyncpg.Connection, event: StripeEvent, request_id: str | None, exc: BaseException
) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.error(
        "webhook handler failed",
        exc_info=exc,
        extra={"stripeEventId": event.id, "code": "handler_failed", "eventType": event.type},
    )
    async with con.transaction():
        await con.execute(RECORD_FAILURE, *_row_values(event, request_id), error)
