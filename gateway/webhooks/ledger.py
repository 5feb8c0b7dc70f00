"""The webhook ledger and the one transaction per delivery.

    claim the ledger row (new, or a failed/received one to retry)   -- else: duplicate, nothing changes
    run the handler: lock the order, apply the transition, stock, payments
    flush audit rows and bridge events and mark the ledger row processed / ignored / stale (one statement)
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
from gateway.unit_of_work import LedgerOutcome, UnitOfWork
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
    unit = UnitOfWork(con, actor="stripe", source_event_id=event.id, request_id=request_id, app_source=app_source)
    outcome = Outcome("ignored", "event type not handled") if handler is None else await handler(unit, event)
    await unit.flush(LedgerOutcome(ledger_id, outcome.status, outcome.reason, outcome.order_id))
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
                    unit = UnitOfWork(con, actor="stripe", source_event_id=event.id, request_id=request_id)
                    await unit.flush(LedgerOutcome(ledger_id, "received", "handlers disabled", None))
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
