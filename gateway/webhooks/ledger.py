"""The webhook ledger and the one transaction per delivery.

A payment event whose only question is whether the state machine lets its order move (a payment intent
succeeded, failed or was canceled; a Checkout Session paid, failed or expired) is decided by the database while
it writes, in one statement (UnitOfWork.apply_move, one round trip): an event already applied is a duplicate;
otherwise it locks the order and writes what the handler would when the order's status allows the move, when the
order has that status already (a payment after its session paid the order), or when there is no such order and
the handler would only ignore the event. Otherwise (a stale event, a session that may create its order) it
writes nothing, and the event takes the path every other event takes:

    read the ledger row's status and the order the event names     -- already applied: duplicate, no transaction
                                                                   -- (skipped when no handler will run)
    run the handler on that order (optimistic unit of work)
    write everything in one statement:                             -- only then does the view answer 200
        lock the order row if it is unchanged since it was read, the ledger row in its final state, the order's
        change, payment, stock moves, audit rows and bridge events

Both statements go through the group-commit pipeline (gateway/db/pipeline.py): concurrent deliveries' reads
share a round trip, and their write statements share a round trip and a commit. Each delivery's write is still
one statement, so its ledger row and its business changes commit together or not at all, and a batch that fails
is retried statement by statement, so one delivery's failure never rolls back another's.

When the handler needs more than the order row (it sends statements of its own: a refund's sum, an order created
from a Checkout Session, subscriptions) or the order changed in between, nothing was written and the event runs
again in locked mode, on its own connection:

    BEGIN
    run the handler: lock the order, apply the transition, stock, payments
    write the ledger row in its final state, the audit rows and the bridge events (one statement)
    COMMIT

The ledger row is written once, at the end, so it never has to be rewritten with its payload. Concurrent
deliveries of one event: the second one waits on the first one's row locks (the order, then the ledger row's
unique key), finds the row settled when it writes its own, and writes nothing: duplicate. A handler exception
rolls everything back; the failure is then recorded in its own short transaction so the next delivery (or
`gateway events replay`) processes the event again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from gateway import metrics
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.pipeline import Pipeline
from gateway.orders.queries import FIND_ORDER, Order, lookup_params
from gateway.unit_of_work import DETACHED, LedgerEntry, NeedsTransaction, Snapshot, UnitOfWork
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers import HANDLERS
from gateway.webhooks.handlers.orders import order_keys, plain_move

log = logging.getLogger("gateway.webhooks")

LedgerStatus = Literal["processed", "ignored", "stale", "received", "duplicate"]

# Statuses of an event that was applied: a new delivery of it is a duplicate. `failed` and `received` (the kill
# switch) are processed again.
SETTLED_STATUSES = frozenset({"processed", "ignored", "stale"})
# The ledger row's status and the order the event names (FIND_ORDER's $1-$4), read without a lock.
PEEK = "".join(
    [
        "SELECT (SELECT status FROM webhook_events WHERE stripe_event_id = $5) AS ledger_status, found.*\n",
        "FROM (VALUES (1)) AS one (x) LEFT JOIN LATERAL (",
        FIND_ORDER,
        ") AS found ON true\n",
    ]
)
_NO_KEYS = (None, None, None, None)

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


class SettledMeanwhile(Exception):
    """Another delivery of the same event settled it while this one ran: roll back, answer duplicate."""


# Both end the delivery whatever the mode (duplicate, 503): the optimistic attempt lets them through.
_SETTLED_OR_UNAVAILABLE: tuple[type[BaseException], ...] = (SettledMeanwhile, *UNAVAILABLE_ERRORS)


def ledger_entry(
    event: StripeEvent, status: str, reason: str | None = None, order_id: str | None = None
) -> LedgerEntry:
    """The ledger row of `event` in its final state."""
    ids = event.ids
    return LedgerEntry(
        event_type=event.type,
        api_version=event.api_version,
        livemode=event.livemode,
        stripe_created=datetime.fromtimestamp(event.created, UTC),
        status=status,
        reason=reason,
        order_id=order_id or ids.order_id,
        checkout_session_id=ids.checkout_session_id,
        payment_intent_id=ids.payment_intent_id,
        charge_id=ids.charge_id,
        subscription_id=ids.subscription_id,
        customer_id=ids.customer_id,
        payload=event.raw,
    )


async def process(unit: UnitOfWork, event: StripeEvent, *, handlers_enabled: bool) -> IngestResult:
    """Run the handler and settle the ledger row with its changes (optimistic mode: the flush is the transaction;
    locked mode: inside the caller's)."""
    handler = HANDLERS.get(event.type)
    if not handlers_enabled:
        # Kill switch: verified and durable, applied later by `gateway events replay --pending`.
        result = IngestResult("received", "handlers disabled")
    elif handler is None:
        result = IngestResult("ignored", "event type not handled")
    else:
        outcome = await handler(unit, event)
        result = IngestResult(outcome.status, outcome.reason, outcome.order_id)
    if not await unit.flush(ledger_entry(event, result.status, result.reason, result.order_id)):
        raise SettledMeanwhile(event.id)
    return result


async def ingest(
    pipeline: Pipeline, event: StripeEvent, *, request_id: str | None, handlers_enabled: bool, app_source: str
) -> IngestResult:
    def unit(con: asyncpg.Connection, snapshot: Snapshot | None = None) -> UnitOfWork:
        return UnitOfWork(
            con,
            actor="stripe",
            source_event_id=event.id,
            request_id=request_id,
            app_source=app_source,
            snapshot=snapshot,
            pipeline=None if snapshot is None else pipeline,
        )

    move = plain_move(event) if handlers_enabled else None
    keys = move.keys if move else order_keys(event)
    order: Order | None = None
    if move is not None:
        try:
            moved = await unit(DETACHED, Snapshot(keys, None)).apply_move(move, ledger_entry(event, "processed"))
        except UNAVAILABLE_ERRORS:
            raise
        except NeedsTransaction:
            # A stale event, or a session that may create its order: read the order, the handler decides.
            metrics.WEBHOOK_MOVES.labels("handler").inc()
        except Exception as exc:
            # Nothing was written; the handler's path applies the event, or meets the same failure and records it.
            metrics.WEBHOOK_MOVES.labels("failed").inc()
            log.warning(
                "move failed; the handler's path runs the event",
                exc_info=exc,
                extra={"stripeEventId": event.id, "eventType": event.type},
            )
        else:
            if moved is None:
                metrics.WEBHOOK_MOVES.labels("duplicate").inc()
                return IngestResult("duplicate")
            decided, order_id = moved
            metrics.WEBHOOK_MOVES.labels(decided).inc()
            if decided == "missing":
                return IngestResult("ignored", move.missing_reason)
            return IngestResult("processed", move.already_reason if decided == "already" else None, order_id)
    # The read serves the handler and the early duplicate answer. With no handler to run (a type we do not handle,
    # or the kill switch), the write alone records the event, and finds a settled ledger row itself (duplicate).
    if handlers_enabled and event.type in HANDLERS:
        peek = await pipeline.fetchrow(PEEK, *(lookup_params(keys) or _NO_KEYS), event.id)
        if peek["ledger_status"] in SETTLED_STATUSES:
            return IngestResult("duplicate")
        if peek["id"]:
            order = Order(**{k: v for k, v in peek.items() if k != "ledger_status"})
    try:
        try:
            return await process(unit(DETACHED, Snapshot(keys, order)), event, handlers_enabled=handlers_enabled)
        except _SETTLED_OR_UNAVAILABLE:
            raise
        except NeedsTransaction as exc:
            log.debug("webhook event runs in locked mode", extra={"reason": str(exc)})
        except Exception as exc:
            # Nothing was written; the locked mode meets the same failure again and records it.
            log.debug("optimistic attempt failed", exc_info=exc)
        async with pipeline.pool.acquire() as con, con.transaction():
            return await process(unit(con), event, handlers_enabled=handlers_enabled)
    except SettledMeanwhile:
        return IngestResult("duplicate")
    except UNAVAILABLE_ERRORS:
        raise  # 503: Stripe retries; nothing was committed
    except Exception as exc:
        async with pipeline.pool.acquire() as con:
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
    row = ledger_entry(event, "failed", None, None)
    async with con.transaction():
        await con.execute(
            RECORD_FAILURE,
            event.id,
            row.event_type,
            row.api_version,
            row.livemode,
            row.stripe_created,
            request_id,
            row.order_id,
            row.checkout_session_id,
            row.payment_intent_id,
            row.charge_id,
            row.subscription_id,
            row.customer_id,
            row.payload,
            error,
        )
