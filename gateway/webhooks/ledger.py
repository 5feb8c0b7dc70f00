"""The webhook ledger and the one transaction per delivery.

Each delivery runs on its own pooled connection, in one transaction:

    lock the Stripe ids the event names            -- transaction-scoped advisory locks, in sorted order
    claim the ledger row                           -- settled already: duplicate, nothing else runs
    run the handler                                -- it locks the rows it changes, decides (Python), writes
    settle the ledger row                          -- processed | ignored | stale | waiting | received
    apply the kept events the order now matches    -- each settles its own ledger row, in this transaction
    COMMIT                                         -- only then does the view answer 200

Exactly once: the ledger row's unique key serialises concurrent deliveries of one event (the second one's claim
waits for the first to commit, then finds the row settled: duplicate). The row and every business change commit
together or not at all. A handler exception rolls everything back and is recorded in its own short transaction
(`failed`), so the next delivery or `gateway events replay` applies the event again. A deadlock or serialization
failure is retried once in a new transaction before it counts as a failure.

Kept events: an event that names its order only by Stripe ids no order knows yet (a dispute or a refund before
the payment events) is settled `waiting`; an invoice event that names the same payment settles it `ignored` (the
payment was a subscription's). The delivery that teaches an order one of those ids names that id
itself, so the advisory lock on it orders the two: either the kept event is committed first and found here, or
it finds the order itself.

Lock order (gateway/orders/queries.py continues it): the advisory locks on Stripe ids, the ledger row, the order
row, the kept events' ledger rows, then the order's own rows, reservations, products and the bridge lock.
Subscription events lock the customer mapping, then the subscription row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from gateway import metrics
from gateway.bridge import outbox
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.errors import DatabaseUnavailable
from gateway.unit_of_work import UnitOfWork
from gateway.webhooks.envelope import MAX_CREATED, StripeEvent, Unstorable, event_from_payload
from gateway.webhooks.handlers import HANDLERS
from gateway.webhooks.handlers.base import Outcome

log = logging.getLogger("gateway.webhooks")

LedgerStatus = Literal["processed", "ignored", "stale", "received", "duplicate", "waiting"]
Origin = Literal["webhook", "replay", "reconcile", "resync"]

# Statuses of an event that was applied: a new delivery of it is a duplicate. `failed`, `received` (the kill
# switch) and `waiting` are run again.
SETTLED_STATUSES = frozenset({"processed", "ignored", "stale"})
# Retried once in a new transaction: two deliveries locked rows in opposite orders, or a serialization failure.
RETRYABLE_ERRORS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# How many rounds of kept events one delivery applies (each round may teach the order more ids).
MAX_KEPT_ROUNDS = 5

# The advisory locks on the Stripe ids the event names ($15, sorted), then the claim: the aggregate runs the
# locks before the row is produced, so both take one round trip.
CLAIM = """
INSERT INTO webhook_events (
    stripe_event_id, type, api_version, livemode, stripe_created, status, attempts, request_id, order_id,
    checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload, origin)
SELECT $1, $2, $3, $4, $5, 'received', 1, $6, $7::uuid, $8, $9, $10, $11, $12, $13, $14
FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($15::text[]) AS k) AS locked
ON CONFLICT (stripe_event_id) DO UPDATE SET
    attempts = webhook_events.attempts + 1,
    request_id = EXCLUDED.request_id,
    origin = EXCLUDED.origin
WHERE webhook_events.status IN ('failed', 'received', 'waiting')
RETURNING id
"""

SETTLE = """
UPDATE webhook_events SET
    status = $2,
    outcome_reason = $3,
    order_id = coalesce($4::uuid, order_id),
    processed_at = CASE WHEN $2 IN ('received', 'waiting') THEN NULL ELSE now() END,
    last_error = NULL
WHERE id = $1
"""

# Kept events that name the order or one of its Stripe ids, oldest first (Stripe time, then event id: the same
# order whatever order they arrived in).
KEPT_FOR_ORDER = """
SELECT w.id, w.payload FROM orders o JOIN webhook_events w
  ON w.status = 'waiting'
 AND (w.order_id = o.id OR w.payment_intent_id = o.stripe_payment_intent_id OR w.charge_id = o.stripe_charge_id
      OR w.checkout_session_id = o.stripe_checkout_session_id)
WHERE o.id = $1::uuid
ORDER BY w.stripe_created, w.stripe_event_id
FOR UPDATE OF w
"""

# A verified event PostgreSQL cannot store as sent: its envelope and exact bytes, `ignored` with the reason. Its
# Stripe time is its arrival time when its own `created` is impossible.
RECORD_UNSTORABLE = """
INSERT INTO webhook_events (
    stripe_event_id, type, api_version, livemode, stripe_created, status, outcome_reason, attempts, request_id,
    payload, raw_body, origin, processed_at)
VALUES ($1, $2, $3, $4, coalesce($5, now()), 'ignored', $6, 1, $7, $8, $9, $10, now())
ON CONFLICT (stripe_event_id) DO NOTHING
RETURNING id
"""

MARK_FAILED = "UPDATE webhook_events SET status = 'failed', last_error = $2 WHERE id = $1"

# Kept events whose payment a subscription invoice names: they were never an order's.
DISMISS_INVOICE_PAYMENTS = """
UPDATE webhook_events SET status = 'ignored', processed_at = now(),
    outcome_reason = 'a subscription invoice''s payment (' || $2 || '), not an order''s'
WHERE status = 'waiting' AND (payment_intent_id = ANY ($1::text[]) OR charge_id = ANY ($1::text[]))
"""

RECORD_FAILURE = """
INSERT INTO webhook_events (
    stripe_event_id, type, api_version, livemode, stripe_created, status, attempts, request_id,
    order_id, checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload,
    last_error, origin)
VALUES ($1, $2, $3, $4, $5, 'failed', 1, $6, $7::uuid, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (stripe_event_id) DO UPDATE SET
    status = 'failed',
    attempts = webhook_events.attempts + 1,
    request_id = EXCLUDED.request_id,
    last_error = EXCLUDED.last_error
WHERE webhook_events.status IN ('failed', 'received', 'waiting')
"""


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: LedgerStatus
    reason: str | None = None
    order_id: str | None = None
    kept_applied: int = 0  # kept events this delivery applied


class HandlerFailed(Exception):
    """A handler raised: the business changes were rolled back and the failure recorded for a retry."""


class RowsBusy(DatabaseUnavailable):
    """A row the event needs stayed locked longer than DB_LOCK_TIMEOUT: 503, Stripe retries later."""

    code = "rows_busy"
    message = "The rows this event changes are busy, retry later"


def _ledger_params(event: StripeEvent) -> tuple[object, ...]:
    """CLAIM's and RECORD_FAILURE's $1-$5 and $7-$13 (the request id is $6): the event and the ids it names."""
    ids = event.ids
    return (
        event.id,
        event.type,
        event.api_version,
        event.livemode,
        datetime.fromtimestamp(event.created, UTC),
        ids.order_id,
        ids.checkout_session_id,
        ids.payment_intent_id,
        ids.charge_id,
        ids.subscription_id,
        ids.customer_id,
        event.raw,
    )


def _stripe_ids(event: StripeEvent) -> list[str]:
    """The payment ids the event names (invoices' too), sorted: their advisory locks are taken in this order."""
    ids = event.ids
    return sorted({i for i in (ids.checkout_session_id, ids.payment_intent_id, ids.charge_id) if i})


async def _run(unit: UnitOfWork, event: StripeEvent, handlers_enabled: bool) -> Outcome:
    handler = HANDLERS.get(event.type)
    if not handlers_enabled:
        # Kill switch: verified and durable, applied later by `gateway events replay --pending`.
        return Outcome("processed", "handlers disabled")  # settled as `received` by the caller
    if handler is None:
        return Outcome("ignored", "event type not handled")
    return await handler(unit, event)


async def _apply_kept(unit: UnitOfWork, order_id: str, by: str) -> int:
    """Apply the kept events the order now matches, each on its own behalf, each settling its ledger row."""
    applied = 0
    for _round in range(MAX_KEPT_ROUNDS):
        rows = await unit.con.fetch(KEPT_FOR_ORDER, order_id)
        learned = False
        for row in rows:
            kept = event_from_payload(row["payload"])
            try:
                async with unit.con.transaction():  # a savepoint: a kept event that fails stays on its own row
                    outcome = await _run(unit.for_event(kept.id), kept, True)
            except (*RETRYABLE_ERRORS, *UNAVAILABLE_ERRORS, asyncpg.LockNotAvailableError):
                raise
            except Exception as exc:
                log.error(
                    "kept webhook event failed",
                    exc_info=exc,
                    extra={"stripeEventId": kept.id, "code": "handler_failed", "eventType": kept.type},
                )
                await unit.con.execute(MARK_FAILED, row["id"], f"{type(exc).__name__}: {exc}"[:2000])
                continue
            reason = outcome.reason if outcome.status == "waiting" else f"kept, then applied with {by}"
            if outcome.reason and outcome.status != "waiting":
                reason = f"{reason}: {outcome.reason}"
            await unit.con.execute(SETTLE, row["id"], outcome.status, reason, outcome.order_id)
            if outcome.status != "waiting":
                applied += 1
                metrics.WEBHOOK_KEPT_APPLIED.labels(kept.type).inc()
                metrics.WEBHOOK_EVENTS.labels(kept.type, outcome.status).inc()
            learned |= outcome.learned_ids
        if not learned:
            break
    return applied


async def deliver(
    con: asyncpg.Connection,
    event: StripeEvent,
    *,
    request_id: str | None,
    handlers_enabled: bool,
    app_source: str,
    origin: Origin = "webhook",
) -> tuple[IngestResult, list[str]]:
    """One delivery inside the caller's transaction: the result and the bridge event types it published."""
    params = _ledger_params(event)
    ledger_id = await con.fetchval(CLAIM, *params[:5], request_id, *params[5:], origin, _stripe_ids(event))
    if ledger_id is None:
        return IngestResult("duplicate"), []
    unit = UnitOfWork(con, actor="stripe", source_event_id=event.id, request_id=request_id, app_source=app_source)
    outcome = await _run(unit, event, handlers_enabled)
    status: LedgerStatus = "received" if not handlers_enabled else outcome.status
    await con.execute(SETTLE, ledger_id, status, outcome.reason, outcome.order_id)
    kept = 0
    if outcome.learned_ids and outcome.order_id is not None:
        kept = await _apply_kept(unit, outcome.order_id, event.id)
    payment_ids = [i for i in (event.ids.payment_intent_id, event.ids.charge_id) if i]
    if handlers_enabled and event.type.startswith("invoice.") and payment_ids:
        await con.execute(DISMISS_INVOICE_PAYMENTS, payment_ids, event.id)
    return IngestResult(status, outcome.reason, outcome.order_id, kept), unit.published


async def ingest(
    pool: asyncpg.Pool,
    event: StripeEvent,
    *,
    request_id: str | None,
    handlers_enabled: bool,
    app_source: str,
    origin: Origin = "webhook",
) -> IngestResult:
    """Apply one delivery in one transaction (retried once after a deadlock or serialization failure)."""
    failure: BaseException
    for attempt in (1, 2):
        try:
            async with pool.acquire() as con:
                async with con.transaction():
                    result, published = await deliver(
                        con,
                        event,
                        request_id=request_id,
                        handlers_enabled=handlers_enabled,
                        app_source=app_source,
                        origin=origin,
                    )
                await _announce(con, published)
        except RETRYABLE_ERRORS as exc:
            metrics.WEBHOOK_RETRIES.labels(type(exc).__name__).inc()
            log.warning(
                "webhook delivery retried after a lock conflict" if attempt == 1 else "webhook retry failed again",
                extra={"stripeEventId": event.id, "eventType": event.type, "reason": type(exc).__name__},
            )
            failure = exc
            continue
        except asyncpg.LockNotAvailableError:
            metrics.WEBHOOK_RETRIES.labels("LockNotAvailableError").inc()
            raise RowsBusy() from None
        except UNAVAILABLE_ERRORS:
            raise  # 503: Stripe retries; nothing was committed
        except Exception as exc:
            failure = exc
            break
        for announcement in published:
            metrics.BRIDGE_EVENTS_PUBLISHED.labels(announcement.partition(":")[2]).inc()
        return result
    async with pool.acquire() as con:
        await _record_failure(con, event, request_id, origin, failure)
    raise HandlerFailed(type(failure).__name__) from failure


async def _announce(con: asyncpg.Connection, published: list[str]) -> None:
    """After the commit: the delivery is done whatever happens here (a lost wake-up only delays the readers)."""
    try:
        await outbox.announce(con, published)
    except UNAVAILABLE_ERRORS as exc:
        log.warning("bridge announcement lost; readers find the rows at their next poll", extra={"reason": str(exc)})


async def record_unstorable(
    pool: asyncpg.Pool, event: Unstorable, *, request_id: str | None, origin: Origin = "webhook"
) -> IngestResult:
    """Record a verified event that cannot be stored as sent: `ignored`, its raw bytes kept (or `duplicate`)."""
    created = (
        datetime.fromtimestamp(event.created, UTC)
        if event.created is not None and 0 < event.created <= MAX_CREATED
        else None
    )
    reason = f"not storable as sent: {event.reason}; raw bytes kept"
    stand_in = {"id": event.id, "object": "event", "type": event.type, "unstorable": event.reason}
    async with pool.acquire() as con:
        recorded = await con.fetchval(
            RECORD_UNSTORABLE,
            event.id,
            event.type,
            event.api_version,
            event.livemode,
            created,
            reason,
            request_id,
            stand_in,
            event.body,
            origin,
        )
    if recorded is None:
        return IngestResult("duplicate")
    metrics.WEBHOOK_UNSTORABLE.labels(event.reason).inc()
    log.warning(
        "stripe event not storable as sent; recorded ignored with its raw bytes",
        extra={"stripeEventId": event.id, "eventType": event.type, "reason": event.reason},
    )
    return IngestResult("ignored", reason)


async def _record_failure(
    con: asyncpg.Connection, event: StripeEvent, request_id: str | None, origin: Origin, exc: BaseException
) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.error(
        "webhook handler failed",
        exc_info=exc,
        extra={"stripeEventId": event.id, "code": "handler_failed", "eventType": event.type},
    )
    params = _ledger_params(event)
    async with con.transaction():
        await con.execute(RECORD_FAILURE, *params[:5], request_id, *params[5:], error, origin)
