"""Support queries and re-processing of the webhook ledger (runbook: finding an event, re-processing events).

Re-processing goes through the ledger module (`gateway.webhooks.ledger.ingest`): the stored payload is rebuilt
into a `StripeEvent` and the handler runs in one transaction that settles the ledger row (only a `failed` or
`received` row can be taken over); a handler failure is recorded on the row exactly as for a delivery. An event
already `processed`, `ignored` or `stale` is never applied again.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import asyncpg

from gateway.orders.queries import valid_uuid
from gateway.progress import SILENT, Progress
from gateway.webhooks.envelope import event_from_payload
from gateway.webhooks.ledger import SETTLED_STATUSES, HandlerFailed, ingest

SELECT_EVENT = """
SELECT id, stripe_event_id, type, api_version, livemode, stripe_created, received_at, processed_at,
       status, outcome_reason, attempts, request_id, order_id::text AS order_id, checkout_session_id,
       payment_intent_id, charge_id, subscription_id, customer_id, last_error, payload
FROM webhook_events
WHERE stripe_event_id = $1
"""

SELECT_ORDER = """
SELECT id::text AS id, user_id, status, status_reason, amount_total, amount_refunded, currency,
       stripe_checkout_session_id, stripe_payment_intent_id, stripe_charge_id, stripe_customer_id, paid_at,
       created_at, updated_at
FROM orders
WHERE id = $1::uuid
   OR stripe_checkout_session_id = $2
   OR stripe_payment_intent_id = $3
   OR stripe_charge_id = $4
ORDER BY (id = $1::uuid) DESC NULLS LAST, created_at
LIMIT 1
"""

SELECT_AUDIT = """
SELECT id, occurred_at, actor, action, subject_type, subject_id, order_id::text AS order_id, stripe_event_id,
       request_id, details
FROM audit_log
WHERE order_id = $1::uuid OR stripe_event_id = $2
ORDER BY id
"""

# Bridge events carry no order column: they are the ones written by this event or by any event of the order.
SELECT_BRIDGE = """
SELECT id, event_type, user_id, app_source, payload, metadata, source_event_id, created_at
FROM bridge_events
WHERE source_event_id = $2
   OR source_event_id IN (SELECT stripe_event_id FROM webhook_events WHERE order_id = $1::uuid)
ORDER BY id
"""

SELECT_RESERVATIONS = """
SELECT id, product_id, quantity, state, expires_at, release_reason, created_at, updated_at
FROM stock_reservations
WHERE order_id = $1::uuid
ORDER BY product_id
"""

# Every ledger row linked to an order, a checkout session or a payment intent (all three columns are indexed).
FIND_EVENTS = """
SELECT id, stripe_event_id, type, api_version, livemode, stripe_created, received_at, processed_at,
       status, outcome_reason, attempts, request_id, order_id::text AS order_id, checkout_session_id,
       payment_intent_id, charge_id, subscription_id, customer_id, last_error
FROM webhook_events
WHERE order_id = $1::uuid OR checkout_session_id = $2 OR payment_intent_id = $3
ORDER BY stripe_created DESC, received_at DESC, id DESC
LIMIT $4
"""

FIND_EVENTS_WITH_PAYLOAD = """
SELECT id, stripe_event_id, type, api_version, livemode, stripe_created, received_at, processed_at,
       status, outcome_reason, attempts, request_id, order_id::text AS order_id, checkout_session_id,
       payment_intent_id, charge_id, subscription_id, customer_id, last_error, payload
FROM webhook_events
WHERE order_id = $1::uuid OR checkout_session_id = $2 OR payment_intent_id = $3
ORDER BY stripe_created DESC, received_at DESC, id DESC
LIMIT $4
"""

# Events kept until their order is known, the longest-waiting first.
WAITING_EVENTS = """
SELECT id, stripe_event_id, type, api_version, livemode, stripe_created, received_at, status, outcome_reason,
       attempts, order_id::text AS order_id, checkout_session_id, payment_intent_id, charge_id, origin,
       extract(epoch FROM now() - received_at)::bigint AS waiting_seconds
FROM webhook_events
WHERE status = 'waiting'
ORDER BY received_at, id
LIMIT $1
"""
WAITING_EVENTS_WITH_PAYLOAD = """
SELECT id, stripe_event_id, type, api_version, livemode, stripe_created, received_at, status, outcome_reason,
       attempts, order_id::text AS order_id, checkout_session_id, payment_intent_id, charge_id, origin, payload,
       extract(epoch FROM now() - received_at)::bigint AS waiting_seconds
FROM webhook_events
WHERE status = 'waiting'
ORDER BY received_at, id
LIMIT $1
"""

# Oldest first (Stripe's creation time), so replayed events are applied in the order they happened.
REPLAY_CANDIDATES = """
SELECT stripe_event_id FROM webhook_events
WHERE status = $1
ORDER BY stripe_created, received_at, id
LIMIT $2
"""

LEDGER_STATE = """
SELECT status, attempts, outcome_reason, last_error, order_id::text AS order_id
FROM webhook_events WHERE stripe_event_id = $1
"""


class InvalidQuery(ValueError):
    """The support query cannot be run as given (usage error)."""


def new_request_id(kind: str) -> str:
    """`replay-<hex>`, `reconcile-<hex>`: the request id written on ledger and audit rows by a support run."""
    return f"{kind}-{secrets.token_hex(8)}"


def _record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


# ------------------------------------------------------------------ show / find


async def show_event(con: asyncpg.Connection, event_id: str) -> dict[str, Any] | None:
    """The ledger row (with its payload), its order, the order's reservations, audit and bridge rows."""
    event = _record(await con.fetchrow(SELECT_EVENT, event_id))
    if event is None:
        return None
    order = (
        _record(
            await con.fetchrow(
                SELECT_ORDER,
                event["order_id"],
                event["checkout_session_id"],
                event["payment_intent_id"],
                event["charge_id"],
            )
        )
        if any((event["order_id"], event["checkout_session_id"], event["payment_intent_id"], event["charge_id"]))
        else None
    )
    order_id = order["id"] if order else None
    audit = [dict(r) for r in await con.fetch(SELECT_AUDIT, order_id, event_id)]
    bridge = [dict(r) for r in await con.fetch(SELECT_BRIDGE, order_id, event_id)]
    reservations = [dict(r) for r in await con.fetch(SELECT_RESERVATIONS, order_id)] if order_id else []
    return {
        "event": event,
        "order": order,
        "reservations": reservations,
        "audit": audit,
        "bridge_events": bridge,
    }


async def find_events(
    con: asyncpg.Connection,
    *,
    session_id: str | None = None,
    order_id: str | None = None,
    payment_intent_id: str | None = None,
    limit: int = 100,
    with_payload: bool = False,
) -> dict[str, Any]:
    """Ledger rows linked to one checkout session, order or payment intent (newest first), with the order.

    The order is found first, so the events of an order found by its session include its payment intent's
    events (and the other way round)."""
    given = [v for v in (session_id, order_id, payment_intent_id) if v]
    if len(given) != 1:
        raise InvalidQuery("give exactly one of --session, --order, --payment-intent")
    if limit < 1:
        raise InvalidQuery("--limit must be at least 1")
    if order_id is not None and valid_uuid(order_id) is None:
        raise InvalidQuery(f"not an order id (uuid): {order_id!r}")
    order = _record(await con.fetchrow(SELECT_ORDER, valid_uuid(order_id), session_id, payment_intent_id, None))
    if order is not None:
        order_id = order["id"]
        session_id = session_id or order["stripe_checkout_session_id"]
        payment_intent_id = payment_intent_id or order["stripe_payment_intent_id"]
    query = FIND_EVENTS_WITH_PAYLOAD if with_payload else FIND_EVENTS
    rows = await con.fetch(query, valid_uuid(order_id), session_id, payment_intent_id, limit)
    return {"order": order, "events": [dict(r) for r in rows]}


async def waiting_events(con: asyncpg.Connection, *, limit: int = 100, with_payload: bool = False) -> dict[str, Any]:
    """Ledger rows kept (`waiting`) until an order learns the Stripe ids they name, the longest-waiting first."""
    if limit < 1:
        raise InvalidQuery("--limit must be at least 1")
    rows = await con.fetch(WAITING_EVENTS_WITH_PAYLOAD if with_payload else WAITING_EVENTS, limit)
    return {"waiting": [dict(r) for r in rows]}


# ------------------------------------------------------------------ replay

ReplayOutcome = Literal["processed", "ignored", "stale", "received", "waiting", "failed", "already_done", "not_found"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    event_id: str
    outcome: ReplayOutcome
    previous_status: str | None = None
    status: str | None = None  # the ledger row's status afterwards
    reason: str | None = None
    order_id: str | None = None
    attempts: int | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def replay_event(
    pool: asyncpg.Pool, event_id: str, *, app_source: str, request_id: str | None = None
) -> ReplayResult:
    """Re-run the handler of one stored event in one transaction, unless it was already applied."""
    async with pool.acquire() as con:
        row = await con.fetchrow(SELECT_EVENT, event_id)
    if row is None:
        return ReplayResult(event_id, "not_found")
    previous = row["status"]
    if previous in SETTLED_STATUSES:
        return ReplayResult(
            event_id,
            "already_done",
            previous,
            previous,
            row["outcome_reason"],
            row["order_id"],
            row["attempts"],
            row["last_error"],
        )
    event = event_from_payload(row["payload"])
    try:
        result = await ingest(
            pool,
            event,
            request_id=request_id or new_request_id("replay"),
            handlers_enabled=True,
            app_source=app_source,
            origin="replay",
        )
    except HandlerFailed:
        outcome: ReplayOutcome = "failed"
    else:
        # "duplicate": another process applied it between our read and our claim.
        outcome = "already_done" if result.status == "duplicate" else result.status
    async with pool.acquire() as con:
        state = await con.fetchrow(LEDGER_STATE, event_id)
    return ReplayResult(
        event_id,
        outcome,
        previous,
        state["status"],
        state["outcome_reason"],
        state["order_id"],
        state["attempts"],
        state["last_error"],
    )


@dataclass(slots=True)
class ReplaySummary:
    status: str
    selected: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "selected": self.selected,
            "outcomes": dict(self.outcomes),
            "failed": self.failed,
        }


async def replay_by_status(
    pool: asyncpg.Pool,
    status: Literal["received", "failed"],
    *,
    app_source: str,
    limit: int | None = None,
    request_id: str | None = None,
    progress: Progress = SILENT,
) -> ReplaySummary:
    """Replay every event in `status`, oldest first, each in its own transaction.

    The list is taken once at the start: an event failing again during this run is not retried in a loop."""
    async with pool.acquire() as con:
        rows = await con.fetch(REPLAY_CANDIDATES, status, limit)
    summary = ReplaySummary(status, selected=len(rows))
    rid = request_id or new_request_id("replay")
    progress.phase(f"replaying {status} events", len(rows))
    for row in rows:
        result = await replay_event(pool, row["stripe_event_id"], app_source=app_source, request_id=rid)
        progress.advance()
        summary.outcomes[result.outcome] += 1
        if result.outcome == "failed":
            summary.failed.append(
                {"event_id": result.event_id, "attempts": result.attempts, "last_error": result.last_error}
            )
    return summary
