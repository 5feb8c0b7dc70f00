"""A unit of work: an order's change, its payment row, its stock moves, the audit rows and bridge (outbox) events a
business change produces, written in the same transaction.

Business code records what happens (`unit.change_order(...)`, `unit.record_payment(...)`, `unit.commit_stock(...)`,
`unit.release_stock(...)`, `unit.audit(...)`, `unit.publish(...)`); `flush()` writes all of it in one statement
(one round trip: the server-side function `unit_of_work_flush`, sql/migrations/0005_unit_of_work_functions.sql),
together with the webhook ledger row in its final state, and announces new bridge events with NOTIFY (delivered
by PostgreSQL only when the transaction commits). Nothing else is written unless the ledger row is.

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
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, cast

import asyncpg

from gateway import metrics
from gateway.bridge.registry import validate_event
from gateway.db.pipeline import Pipeline
from gateway.orders import queries
from gateway.orders.queries import Order, OrderChange, OrderKeys, Payment

log = logging.getLogger("gateway.stock")

BRIDGE_CHANNEL = "bridge_events"
BRIDGE_METADATA = {"version": "v1", "origin": "webhook"}
# Writers take it shared (transaction-scoped) before bridge rows are written, so they never wait for each other;
# readers take it exclusive before they page with `id > cursor` (gateway/bridge/events.py), which waits until
# every transaction that has drawn a bridge id has ended: no row can then commit late with a smaller id.
# FLUSH takes it just before the bridge INSERT draws the first id, and only when there is something to publish.
BRIDGE_LOCK_KEY = 0x6272_6964_6765


# The server-side function (sql/migrations/0005_unit_of_work_functions.sql) takes, in order: the audit rows and
# bridge events ($1-$7, each list as one JSON array: one parameter encodes faster than one array per column),
# the ledger row ($8-$22), the order's change ($23-$33, OrderChange.fields) and its later changes ($34, a JSON
# array of the same fields), the payment ($35-$40, Payment.params), the order whose stock is committed ($41) and
# the order and reason of a release ($42-$43), in optimistic mode the order the decision was taken on and its
# row version ($44-$45), and for a move the function decides (UnitOfWork.apply_move; the order ids above are then
# NULL) the statuses it may move the order from, the order's look-up keys (FIND_ORDER's), the stock effect, the
# bridge event's type and the ledger's reasons when the order has the status already or does not exist ($46-$54).
FLUSH = """
SELECT gated, settled, oversold, types, decided, moved_order FROM unit_of_work_flush(
    $1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
    $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34,
    $35, $36, $37, $38, $39, $40,
    $41, $42, $43,
    $44, $45,
    $46, $47, $48, $49, $50, $51, $52, $53, $54)
"""
_NO_ORDER_CHANGE = (None,) * 11
_NO_PAYMENT = (None,) * 6
_NO_MOVE = (None,) * 9


def _order_changes(changes: list[tuple[str, OrderChange]]) -> tuple[object, ...]:
    """FLUSH's $23-$34: the first change's fields, then the later changes as JSON objects of the same fields."""
    if not changes:
        return (*_NO_ORDER_CHANGE, None)
    first, *later = (change.fields(order_id) for order_id, change in changes)
    return (*first.values(), later or None)


def _once(recorded: object, what: str) -> None:
    if recorded is not None:
        raise RuntimeError(f"{what} is recorded once per unit of work")


# What the database wrote for a move (UnitOfWork.apply_move).
Decided = Literal["moved", "already", "missing"]


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
class OrderMove:
    """An event's request to move the order it names to `change.status`, with what the move brings: the payment
    row (its order and, when the event has none, its currency come from the order), stock committed or released,
    and the bridge event. The state machine allows it from `sources` only."""

    keys: OrderKeys
    change: OrderChange
    sources: frozenset[str]
    bridge_type: str
    already_reason: str  # the outcome's reason when the order has the status already
    missing_reason: str | None = None  # no such order: the event is ignored for this reason (None: not decided)
    payment: Payment | None = None
    stock_commit: bool = False
    stock_release: str | None = None  # the release's reason

    def payment_for(self, order: Order) -> Payment | None:
        if self.payment is None:
            return None
        return replace(self.payment, order_id=order.id, currency=self.payment.currency or order.currency or "")


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
    order_changes: list[tuple[str, OrderChange]] = field(default_factory=list)  # applied in this order
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

    def change_order(self, order_id: str, change: OrderChange) -> None:
        """The order's change of status, with the Stripe ids and amounts it learnt; written by flush(), after the
        unit's earlier changes."""
        self.order_changes.append((order_id, change))

    def record_payment(self, payment: Payment) -> None:
        """The payment row of a payment intent; written by flush()."""
        _once(self.payment, "a payment")
        self.payment = payment

    def commit_stock(self, order_id: str) -> None:
        """The order's reservations become sales; written by flush(). Units released meanwhile and sold to others
        are logged and audited as oversold."""
        _once(self.stock_commit, "a stock commit")
        self.stock_commit = order_id

    def release_stock(self, order_id: str, reason: str) -> None:
        """The order's held units go back to stock; written by flush()."""
        _once(self.stock_release, "a stock release")
        self.stock_release = (order_id, reason)

    def audit(
        self, action: str, subject_type: str, subject_id: str, *, order_id: str | None = None, **details: Any
    ) -> None:
        self.audits.append(AuditEntry(action, subject_type, subject_id, order_id, details))

    def publish(self, event_type: str, user_id: str | None, payload: dict[str, Any]) -> None:
        event = BridgeEvent(event_type, user_id, {**payload, "source": "stripe"})
        validate_event(event.event_type, event.user_id, event.payload, BRIDGE_METADATA)  # invalid: tx fails
        self.events.append(event)

    def _args(
        self, ledger: LedgerEntry, move: OrderMove | None = None, keys: tuple[object, ...] = ()
    ) -> tuple[object, ...]:
        """FLUSH's parameters: what the unit recorded, or the move the function decides for the order `keys`
        (lookup_params) find, its order ids left blank."""
        if move is None:
            change = _order_changes(self.order_changes)
            payment = self.payment.params() if self.payment else _NO_PAYMENT
            stock = (self.stock_commit, *(self.stock_release or (None, None)))
            decide: tuple[object, ...] = _NO_MOVE
        else:
            change = (None, *list(move.change.fields("").values())[1:], None)
            payment = (None, *move.payment.params()[1:]) if move.payment else _NO_PAYMENT
            stock = (None, None, move.stock_release)
            decide = (
                sorted(move.sources),
                *keys,
                "commit" if move.stock_commit else "release" if move.stock_release else None,
                move.bridge_type,
                move.already_reason,
                move.missing_reason,
            )
        return (
            self.actor,
            self.source_event_id,
            self.request_id,
            [
                {
                    "action": a.action,
                    "subject_type": a.subject_type,
                    "subject_id": a.subject_id,
                    "order_id": a.order_id,
                    "details": a.details,
                }
                for a in self.audits
            ],
            self.app_source,
            [{"event_type": e.event_type, "user_id": e.user_id, "payload": e.payload} for e in self.events],
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
            *change,
            *payment,
            *stock,
            self.guard.id if self.guard else None,
            self.guard.version if self.guard else None,
            *decide,
        )

    async def flush(self, ledger: LedgerEntry) -> bool:
        """Write the ledger row, the order change, the payment, the stock moves, the audit rows and the bridge
        events in one statement.

        False when another delivery of the same event settled its ledger row first (nothing may then commit).
        Optimistic mode: the statement goes through the group-commit pipeline, which commits it (alone or with
        other deliveries' statements); NeedsTransaction when the order row changed since it was read (nothing
        written).
        """
        args = self._args(ledger)
        if self.pipeline is None:
            row = await self.con.fetchrow(FLUSH, *args)
        else:
            # Sent in order of the order row it locks, then of the ledger row it writes (gateway/db/pipeline.py).
            order = (self.guard.id if self.guard else "", self.source_event_id)
            row = await self.pipeline.fetchrow(FLUSH, *args, order=order)
        committed_for = self.stock_commit
        self.audits.clear()
        self.events.clear()
        self.order_changes.clear()
        self.payment = self.stock_commit = self.stock_release = None
        if not row["gated"]:
            raise NeedsTransaction("the order changed since it was read")
        if not row["settled"]:
            return False
        if committed_for is not None and row["oversold"]:  # the statement wrote its audit row
            log.warning("stock oversold on a late payment", extra={"orderId": committed_for, "status": "paid"})
        self._count_published(row["types"])
        return True

    async def apply_move(self, move: OrderMove, ledger: LedgerEntry) -> tuple[Decided, str | None] | None:
        """Optimistic mode, nothing recorded: let the database decide `move` while it writes (one statement).
        It locks the order `move.keys` find and writes, with `ledger`: if the order's status is one of
        `move.sources`, what `_transition` (gateway/webhooks/handlers/orders.py) writes for that order ("moved");
        if it has the status already, its change and payment ("already"); if there is no such order and
        `move.missing_reason` is given, the ledger row alone, ignored ("missing").

        Returns what was decided and the order's id; None when the event was settled before (nothing written:
        duplicate). NeedsTransaction in any other case (nothing written): the event needs its handler.
        """
        if self.pipeline is None or self.audits or self.events or self.order_changes or self.payment:
            raise RuntimeError("a move is the only work of an optimistic unit of work")
        params = queries.lookup_params(move.keys)
        if params is None:
            raise NeedsTransaction("the event names no order")
        args = self._args(ledger, move, params)
        # Sent in order of the order id the event names. One that names its order only by a Stripe id sorts first
        # and may lock out of order: a deadlock between two batches then rolls one back, and the pipeline runs its
        # statements again one by one.
        row = await self.pipeline.fetchrow(FLUSH, *args, order=(params[0] or "", self.source_event_id))
        if not row["gated"]:
            raise NeedsTransaction("the handler decides")
        if not row["settled"]:
            return None
        order_id: str | None = row["moved_order"]
        if move.stock_commit and row["oversold"]:
            log.warning("stock oversold on a late payment", extra={"orderId": order_id, "status": "paid"})
        self._count_published(row["types"])
        return row["decided"], order_id

    @staticmethod
    def _count_published(types: list[str]) -> None:
        for event_type in types:
            metrics.BRIDGE_EVENTS_PUBLISHED.labels(event_type).inc()
