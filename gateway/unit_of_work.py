"""A unit of work: an order's change, its payment row, its stock moves, the audit rows and bridge (outbox) events a
business change produces, written in the same transaction.

Business code records what happens (`unit.change_order(...)`, `unit.record_payment(...)`, `unit.commit_stock(...)`,
`unit.release_stock(...)`, `unit.audit(...)`, `unit.publish(...)`); `flush()` writes all of it in one statement
(one round trip), together with the webhook ledger row in its final state, and announces new bridge events with
NOTIFY (delivered by PostgreSQL only when the transaction commits). Nothing in that statement is written unless
the ledger row is (the `gate`).

Two modes:

- **Locked**: inside the caller's transaction. `lock_order()` locks the order row; the caller commits.
- **Optimistic** (`snapshot` and `pipeline` given, `con` is DETACHED): no transaction is open. `lock_order()`
  returns the order the caller read beforehand, with its row version (PostgreSQL's `xmin`, which every update of
  the row changes), and `flush()` goes through the group-commit pipeline (gateway/db/pipeline.py): its statement
  commits on its own or with other deliveries' statements, never in part. Its first step locks the order row only
  if it still has that version, and writes nothing otherwise (`NeedsTransaction`). A handler that sends a statement
  itself (`unit.con`) also raises `NeedsTransaction` before anything is sent. The caller then runs the event again
  in locked mode. The outcome is the one the locked mode gives: the decision was taken on the row as it is when
  the write commits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import asyncpg

from gateway import metrics, stock
from gateway.bridge.registry import validate_event
from gateway.db.pipeline import Pipeline
from gateway.orders import queries
from gateway.orders.queries import UPDATE_ORDER, UPSERT_PAYMENT, Order, OrderChange, OrderKeys, Payment

BRIDGE_CHANNEL = "bridge_events"
BRIDGE_METADATA = {"version": "v1", "origin": "webhook"}
# Writers take it shared (transaction-scoped) before bridge rows are written, so they never wait for each other;
# readers take it exclusive before they page with `id > cursor` (gateway/bridge/events.py), which waits until
# every transaction that has drawn a bridge id has ended: no row can then commit late with a smaller id.
# The lock is part of FLUSH: the `bridge_lock` CTE is joined into the bridge INSERT, so it is held before the
# first bridge id is drawn, and it is only taken when there is something to publish.
BRIDGE_LOCK_KEY = 0x6272_6964_6765


def _shifted(statement: str, offset: int) -> str:
    """`statement` with its parameters renumbered from $1 to $(1 + offset), to run as part of a larger one."""
    return re.sub(r"\$(\d+)", lambda match: f"${int(match[1]) + offset}", statement)


# Optimistic mode ($49: the order, $50: the row version read): the order row is locked first, and only if it
# still has that version; no `gate` row, nothing written. Locked mode: $49 is NULL and the gate is open.
# The ledger row is written once, in its final state: inserted, or taken over when an earlier attempt failed
# (or the kill switch left it `received`). No row back from `ledger` means another delivery of the same event
# settled it first: every other write depends on `ledger`, so nothing is written, and in locked mode the caller
# rolls the whole transaction back (gateway/webhooks/ledger.py).
_FLUSH_LEDGER_AUDIT_BRIDGE = """
WITH guard AS (
    SELECT id FROM orders WHERE id = $49::uuid AND xmin = $50::xid FOR UPDATE
), gate AS (
    SELECT WHERE $49::uuid IS NULL OR EXISTS (SELECT FROM guard)
), ledger AS (
    INSERT INTO webhook_events (
        stripe_event_id, type, api_version, livemode, stripe_created, status, outcome_reason, attempts, request_id,
        order_id, checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload,
        processed_at)
    SELECT $2, $14, $15, $16, $17, $18, $19, 1, $3, $20::uuid, $21, $22, $23, $24, $25, $26,
           CASE WHEN $18 = 'received' THEN NULL ELSE now() END
    FROM gate
    ON CONFLICT (stripe_event_id) DO UPDATE SET
        status = EXCLUDED.status,
        outcome_reason = EXCLUDED.outcome_reason,
        attempts = webhook_events.attempts + 1,
        request_id = EXCLUDED.request_id,
        order_id = coalesce(EXCLUDED.order_id, webhook_events.order_id),
        processed_at = EXCLUDED.processed_at,
        last_error = NULL
    WHERE webhook_events.status IN ('failed', 'received')
    RETURNING id
), audit AS (
    INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
    SELECT $1, a.action, a.subject_type, a.subject_id, a.order_id, $2, $3, a.details
    FROM unnest($4::text[], $5::text[], $6::text[], $7::uuid[], $8::jsonb[])
         AS a(action, subject_type, subject_id, order_id, details)
    WHERE EXISTS (SELECT FROM ledger)
), bridge_lock AS (
    SELECT pg_advisory_xact_lock_shared($13) WHERE cardinality($10::text[]) > 0 AND EXISTS (SELECT FROM ledger)
), bridge AS (
    INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
    SELECT b.event_type, b.user_id, $9, b.payload, $27, $2
    FROM unnest($10::text[], $11::text[], $12::jsonb[]) AS b(event_type, user_id, payload)
    CROSS JOIN bridge_lock
    ON CONFLICT (source_event_id, event_type) DO NOTHING
    RETURNING id, event_type
)"""
_FLUSH_OVERSOLD_AUDIT = """
stock_oversold_audit AS (
    INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
    SELECT $1, 'stock.oversold', 'order', $46::uuid::text, $46::uuid, $2, $3, jsonb_build_object('products', products)
    FROM stock_oversold
    WHERE cardinality(products) > 0
)"""
_FLUSH_RESULT = """
SELECT (SELECT count(*) FROM gate) AS gated,
       (SELECT count(*) FROM ledger) AS settled,
       (SELECT products FROM stock_oversold) AS oversold,
       count(pg_notify($28, bridge.id::text || ':' || bridge.event_type)) AS published,
       coalesce(array_agg(bridge.event_type), '{}') AS types
FROM bridge
"""
FLUSH = "".join(
    [
        _FLUSH_LEDGER_AUDIT_BRIDGE,
        ", order_change AS (",
        _shifted(UPDATE_ORDER, 28),  # $29-$39
        "), payment AS (",
        _shifted(UPSERT_PAYMENT, 39),  # $40-$45
        "),",
        _shifted(stock.COMMIT_CTES, 45),  # $46
        ",",
        _FLUSH_OVERSOLD_AUDIT,
        ",",
        _shifted(stock.RELEASE_CTES, 46),  # $47-$48
        _FLUSH_RESULT,
    ]
).replace("/* gate */", "AND EXISTS (SELECT FROM ledger)")


_NO_ORDER_CHANGE = (None,) * 11
_NO_PAYMENT = (None,) * 6
log = logging.getLogger("gateway.stock")


class NeedsTransaction(Exception):
    """An optimistic unit of work cannot finish without a transaction and row locks: nothing was written; run the
    work again in locked mode."""


class _Detached:
    """`unit.con` of an optimistic unit of work: a handler that sends a statement itself needs a transaction."""

    def __getattr__(self, name: str) -> Any:
        raise NeedsTransaction(f"statement sent outside flush() ({name})")


# `con` of an optimistic unit of work: a handler that sends a statement itself raises NeedsTransaction.
DETACHED = cast(asyncpg.Connection, _Detached())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What an optimistic unit of work starts from: the order found by `keys`, read without a lock (None: none)."""

    keys: OrderKeys
    order: Order | None


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
class LedgerEntry:
    """The webhook ledger row a unit of work settles, in its final state (`webhook_events`)."""

    event_type: str
    api_version: str | None
    livemode: bool
    stripe_created: datetime
    status: str  # processed | ignored | stale | received
    reason: str | None
    order_id: str | None
    checkout_session_id: str | None
    payment_intent_id: str | None
    charge_id: str | None
    subscription_id: str | None
    customer_id: str | None
    payload: dict[str, Any]


@dataclass
class UnitOfWork:
    con: asyncpg.Connection  # for handlers' own statements; DETACHED in optimistic mode
    actor: str
    source_event_id: str  # the Stripe event id
    request_id: str | None
    app_source: str = "website"
    snapshot: Snapshot | None = None  # given: optimistic mode
    pipeline: Pipeline | None = None  # optimistic mode: flush() goes through it
    audits: list[AuditEntry] = field(default_factory=list)
    events: list[BridgeEvent] = field(default_factory=list)
    order_change: tuple[str, OrderChange] | None = None
    payment: Payment | None = None
    stock_commit: str | None = None  # order id
    stock_release: tuple[str, str] | None = None  # order id, reason
    guard: Order | None = field(init=False, default=None)  # optimistic mode: the order the decision was taken on

    def __post_init__(self) -> None:
        if (self.snapshot is None) != (self.pipeline is None):
            raise ValueError("an optimistic unit of work needs both a snapshot and a pipeline")

    async def lock_order(self, keys: OrderKeys) -> Order | None:
        """The order an event is about, its row locked until the transaction ends (None: no such order).

        Optimistic mode: the snapshot's order (a copy), for the snapshot's keys only; flush() then writes only if
        the row has not changed since it was read."""
        if self.snapshot is None:
            return await queries.lock_order(self.con, keys)
        if keys != self.snapshot.keys or self.guard is not None:
            raise NeedsTransaction("a second order look-up")
        if self.snapshot.order is None:
            return None
        self.guard = self.snapshot.order
        return replace(self.snapshot.order)

    async def change_order(self, order_id: str, change: OrderChange) -> None:
        """Written by flush(). A statement may update a row only once: an earlier change is written now."""
        if self.order_change is not None:
            await self.con.execute(UPDATE_ORDER, *self.order_change[1].params(self.order_change[0]))
        self.order_change = (order_id, change)

    async def record_payment(self, payment: Payment) -> None:
        """Written by flush(); an earlier payment of the same unit is written now."""
        if self.payment is not None:
            await self.con.execute(UPSERT_PAYMENT, *self.payment.params())
        self.payment = payment

    async def commit_stock(self, order_id: str) -> None:
        """The order's reservations become sales (flush() writes it; an earlier commit is written now). Units
        released meanwhile and sold to others are logged and audited as oversold."""
        if self.stock_commit is not None:
            result = await stock.commit_for_order(self.con, self.stock_commit)
            self._oversold(self.stock_commit, result.oversold, audit=True)
        self.stock_commit = order_id

    async def release_stock(self, order_id: str, reason: str) -> None:
        """The order's held units go back to stock (flush() writes it; an earlier release is written now)."""
        if self.stock_release is not None:
            await stock.release_for_order(self.con, *self.stock_release)
        self.stock_release = (order_id, reason)

    def _oversold(self, order_id: str, products: list[int], *, audit: bool) -> None:
        if products:
            log.warning("stock oversold on a late payment", extra={"orderId": order_id, "status": "paid"})
            if audit:
                self.audit("stock.oversold", "order", order_id, order_id=order_id, products=products)

    def audit(
        self, action: str, subject_type: str, subject_id: str, *, order_id: str | None = None, **details: Any
    ) -> None:
        self.audits.append(AuditEntry(action, subject_type, subject_id, order_id, details))

    def publish(self, event_type: str, user_id: str | None, payload: dict[str, Any]) -> None:
        event = BridgeEvent(event_type, user_id, {**payload, "source": "stripe"})
        validate_event(event.event_type, event.user_id, event.payload, BRIDGE_METADATA)  # invalid: tx fails
        self.events.append(event)

    async def flush(self, ledger: LedgerEntry) -> bool:
        """Write the ledger row, the order change, the payment, the stock moves, the audit rows and the bridge
        events in one statement.

        False when another delivery of the same event settled its ledger row first (nothing may then commit).
        Optimistic mode: the statement goes through the group-commit pipeline, which commits it (alone or with
        other deliveries' statements); NeedsTransaction when the order row changed since it was read (nothing
        written).
        """
        args = (
            self.actor,
            self.source_event_id,
            self.request_id,
            [a.action for a in self.audits],
            [a.subject_type for a in self.audits],
            [a.subject_id for a in self.audits],
            [a.order_id for a in self.audits],
            [a.details for a in self.audits],
            self.app_source,
            [e.event_type for e in self.events],
            [e.user_id for e in self.events],
            [e.payload for e in self.events],
            BRIDGE_LOCK_KEY,
            ledger.event_type,
            ledger.api_version,
            ledger.livemode,
            ledger.stripe_created,
            ledger.status,
            ledger.reason,
            ledger.order_id,
            ledger.checkout_session_id,
            ledger.payment_intent_id,
            ledger.charge_id,
            ledger.subscription_id,
            ledger.customer_id,
            ledger.payload,
            BRIDGE_METADATA,
            BRIDGE_CHANNEL,
            *(self.order_change[1].params(self.order_change[0]) if self.order_change else _NO_ORDER_CHANGE),
            *(self.payment.params() if self.payment else _NO_PAYMENT),
            self.stock_commit,
            *(self.stock_release or (None, None)),
            self.guard.id if self.guard else None,
            self.guard.version if self.guard else None,
        )
        if self.pipeline is None:
            row = await self.con.fetchrow(FLUSH, *args)
        else:
            # Sent in order of the order row it locks, then of the ledger row it writes (gateway/db/pipeline.py).
            order = (self.guard.id if self.guard else "", self.source_event_id)
            row = await self.pipeline.fetchrow(FLUSH, *args, order=order)
        committed_for = self.stock_commit
        self.audits.clear()
        self.events.clear()
        self.order_change = self.payment = self.stock_commit = self.stock_release = None
        if not row["gated"]:
            raise NeedsTransaction("the order changed since it was read")
        if not row["settled"]:
            return False
        if committed_for is not None:
            self._oversold(committed_for, row["oversold"], audit=False)  # the statement wrote its audit row
        for event_type in row["types"]:
            metrics.BRIDGE_EVENTS_PUBLISHED.labels(event_type).inc()
        return True
