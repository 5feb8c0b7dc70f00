"""One-time payments: checkout sessions, payment intents, refunds and disputes move orders and their stock.

Every handler locks the order row first (`unit.lock_order`), decides with the state machine
(gateway.orders.transitions), then records the order's change, its payment row, its stock moves, audit rows and
bridge events in the unit of work, which writes them together in the caller's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from gateway import stripe_payload as sp
from gateway.orders import transitions as t
from gateway.orders.queries import (
    CREATE_ORDER_FROM_SESSION,
    INSERT_DISPUTE,
    SUM_SUCCEEDED_REFUNDS,
    UPSERT_REFUND,
    Order,
    OrderChange,
    OrderKeys,
    Payment,
)
from gateway.unit_of_work import OrderMove, UnitOfWork
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers import subscriptions
from gateway.webhooks.handlers.base import Handler, Outcome

log = logging.getLogger("gateway.webhooks.orders")

BRIDGE_TYPES = {
    t.PAID: "ORDER_PAID",
    t.FAILED: "ORDER_PAYMENT_FAILED",
    t.EXPIRED: "ORDER_EXPIRED",
    t.CANCELED: "ORDER_CANCELED",
    t.REFUNDED: "ORDER_REFUNDED",
    t.PARTIALLY_REFUNDED: "ORDER_REFUNDED",
    t.DISPUTED: "ORDER_DISPUTED",
}


def order_keys(event: StripeEvent) -> OrderKeys:
    """Every id by which `event` may point at an order."""
    ids = event.ids
    return OrderKeys(ids.order_id, ids.checkout_session_id, ids.payment_intent_id, ids.charge_id)


def _created(event: StripeEvent) -> datetime:
    return datetime.fromtimestamp(event.created, UTC)


def _unknown(event: StripeEvent) -> Outcome:
    return Outcome("ignored", f"no order matches this {sp.object_type(event.type, event.object) or 'object'}")


def _move(
    event: StripeEvent, change: OrderChange, payment: Payment | None = None, *, missing_decided: bool = False
) -> OrderMove:
    """`event` asks for the order it names to move to `change.status` (`missing_decided`: without such an order,
    its handler records it ignored, as `_unknown` says)."""
    target = change.status
    return OrderMove(
        keys=order_keys(event),
        change=change,
        sources=t.sources(target),
        bridge_type=BRIDGE_TYPES[target],
        already_reason=f"order already {target}",
        missing_reason=_unknown(event).reason if missing_decided else None,
        payment=payment,
        stock_commit=target == t.PAID,
        stock_release=f"order_{target}" if target in t.RELEASING else None,
    )


def _transition(unit: UnitOfWork, event: StripeEvent, order: Order, move: OrderMove) -> Outcome:
    """Move `order` to `move.change.status` if the state machine allows it, with its stock and bridge event.

    The database also runs the branches "already that status" and "allowed: apply" (`unit_of_work_flush`,
    sql/migrations/0006_order_moves.sql) when the ledger lets it decide alone: both must write the same rows
    (tests/test_webhook_moves.py)."""
    change = move.change
    target = change.status
    if order.status == target:
        unit.change_order(order.id, change)  # may still add ids the order did not know yet
        return Outcome("processed", move.already_reason, order.id)
    if target == t.PAID and order.status in t.SETTLED:
        # A payment event after a refund or dispute implied the payment: the status stays, but the
        # payment's ids and its (earlier) time are kept, so the row does not depend on delivery order.
        unit.change_order(order.id, replace(change, status=order.status, reason=None))
        return Outcome("processed", f"order already {order.status}; payment details recorded", order.id)
    if order.status not in move.sources:
        return Outcome("stale", f"order is {order.status}; {event.type} cannot move it to {target}", order.id)

    unit.change_order(order.id, change)
    if move.stock_commit:
        unit.commit_stock(order.id)
    elif move.stock_release:
        unit.release_stock(order.id, move.stock_release)
    unit.audit(f"order.{target}", "order", order.id, order_id=order.id, previous=order.status, reason=change.reason)
    _publish(unit, order, change, move.bridge_type)
    order.status = target
    return Outcome("processed", None, order.id)


def _publish(unit: UnitOfWork, order: Order, change: OrderChange, event_type: str) -> None:
    unit.publish(
        event_type,
        order.user_id,
        {
            "order_id": order.id,
            "status": change.status,
            "amount": order.amount_total or change.amount_total or 0,
            "amount_refunded": max(order.amount_refunded, change.amount_refunded),
            "currency": order.currency or change.currency,
            "session_id": order.stripe_checkout_session_id or change.checkout_session_id,
            "payment_intent_id": order.stripe_payment_intent_id or change.payment_intent_id,
            "customer_id": order.stripe_customer_id or change.customer_id,
        },
    )


# ------------------------------------------------------------------ checkout sessions


async def _order_for_session(unit: UnitOfWork, event: StripeEvent, *, create: bool) -> Order | None:
    order = await unit.lock_order(order_keys(event))
    session = event.object
    if order is None and create and sp.order_id_of(session) is None:
        # Payment Link or dashboard checkout: no order of ours, build it from the session.
        ids = sp.checkout_session_ids(session)
        await unit.con.execute(
            CREATE_ORDER_FROM_SESSION,
            sp.user_id_of(session),
            sp.session_amount_total(session) or 0,
            sp.currency_of(session),
            ids.session_id,
            ids.customer_id,
        )
        order = await unit.lock_order(order_keys(event))
        if order is not None:
            unit.audit("order.created", "order", order.id, order_id=order.id, source="checkout_session")
    return order


def _session_change(event: StripeEvent, status: str, reason: str | None = None) -> OrderChange:
    session = event.object
    ids = sp.checkout_session_ids(session)
    return OrderChange(
        status=status,
        reason=reason,
        amount_total=sp.session_amount_total(session),
        currency=sp.currency_of(session),
        checkout_session_id=ids.session_id,
        payment_intent_id=ids.payment_intent_id,
        customer_id=ids.customer_id,
        paid_at=_created(event) if status == t.PAID else None,
    )


async def checkout_session_completed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    if sp.session_mode(event.object) == "subscription":
        return await subscriptions.checkout_session_completed(unit, event)
    order = await _order_for_session(unit, event, create=True)
    if order is None:
        return _unknown(event)
    if not sp.session_is_paid(event.object):
        # Delayed payment methods: the money comes with checkout.session.async_payment_succeeded.
        change = replace(_session_change(event, order.status, "awaiting asynchronous payment"), paid_at=None)
        unit.change_order(order.id, change)
        return Outcome("processed", "awaiting asynchronous payment", order.id)
    return _transition(unit, event, order, _session_move(event))


async def checkout_session_async_payment_succeeded(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    order = await _order_for_session(unit, event, create=True)
    if order is None:
        return _unknown(event)
    return _transition(unit, event, order, _session_move(event))


async def checkout_session_async_payment_failed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    order = await _order_for_session(unit, event, create=False)
    if order is None:
        return _unknown(event)
    return _transition(unit, event, order, _session_move(event))


async def checkout_session_expired(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    order = await _order_for_session(unit, event, create=False)
    if order is None:
        return _unknown(event)
    return _transition(unit, event, order, _session_move(event))


# What each session event asks of its order (a completed session: when it is paid).
_SESSION_TARGETS: dict[str, tuple[str, str | None]] = {
    "checkout.session.completed": (t.PAID, None),
    "checkout.session.async_payment_succeeded": (t.PAID, None),
    "checkout.session.async_payment_failed": (t.FAILED, "async_payment_failed"),
    "checkout.session.expired": (t.EXPIRED, "checkout_session_expired"),
}


def _session_move(event: StripeEvent) -> OrderMove:
    # A completed or paid session with no order of ours makes one (_order_for_session): its handler decides.
    creates = event.type in ("checkout.session.completed", "checkout.session.async_payment_succeeded")
    return _move(event, _session_change(event, *_SESSION_TARGETS[event.type]), missing_decided=not creates)


# ------------------------------------------------------------------ payment intents


def _intent_change(event: StripeEvent, status: str, reason: str | None = None) -> OrderChange:
    pi = event.object
    return OrderChange(
        status=status,
        reason=reason,
        amount_total=sp.payment_intent_amount(pi),
        currency=sp.currency_of(pi),
        payment_intent_id=sp.object_id(pi),
        charge_id=sp.payment_intent_latest_charge(pi),
        customer_id=sp.customer_id(pi),
        paid_at=_created(event) if status == t.PAID else None,
    )


_INTENT_TYPES = ("payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled")


def _intent_move(event: StripeEvent) -> OrderMove:
    """What a payment intent event asks of its order, with the payment row it records."""
    pi = event.object
    if event.type == "payment_intent.succeeded":
        target, payment_status, reason = t.PAID, "succeeded", None
    elif event.type == "payment_intent.payment_failed":
        code, _message = sp.payment_intent_failure(pi)
        target, payment_status, reason = t.FAILED, "failed", code or "payment_failed"
    else:  # payment_intent.canceled
        target, payment_status = t.CANCELED, "canceled"
        reason = sp.payment_intent_cancellation_reason(pi) or "payment_intent_canceled"
    payment = Payment(
        order_id="",  # the order's, once found
        payment_intent_id=sp.object_id(pi),
        charge_id=sp.payment_intent_latest_charge(pi),
        amount=sp.payment_intent_amount(pi) or 0,
        currency=sp.currency_of(pi) or "",  # else the order's
        status=payment_status,
    )
    return _move(event, _intent_change(event, target, reason), payment, missing_decided=True)


async def payment_intent_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    order = await unit.lock_order(order_keys(event))
    if order is None:
        return _unknown(event)
    move = _intent_move(event)
    if payment := move.payment_for(order):
        unit.record_payment(payment)
    return _transition(unit, event, order, move)


# ------------------------------------------------------------------ refunds and disputes


async def _ensure_paid(unit: UnitOfWork, event: StripeEvent, order: Order, charge_id: str | None) -> None:
    """A refund or dispute proves the payment happened: if its payment event has not arrived yet, the order is
    paid now, so events converge whatever order Stripe delivers them in."""
    if order.status in t.SETTLED:
        return
    change = OrderChange(
        status=t.PAID,
        reason=f"payment implied by {event.type}",
        charge_id=charge_id,
        payment_intent_id=event.ids.payment_intent_id,
        paid_at=_created(event),
    )
    _transition(unit, event, order, _move(event, change))


async def _apply_refunded_amount(
    unit: UnitOfWork, event: StripeEvent, order: Order, refunded: int, charge_amount: int | None
) -> Outcome:
    total = order.amount_total or charge_amount or 0
    refunded = max(order.amount_refunded, refunded)
    if refunded == order.amount_refunded:
        return Outcome("processed", "refunded amount unchanged", order.id)
    status = t.status_after_refund(order.status, total, refunded)
    change = OrderChange(status=status, amount_refunded=refunded, amount_total=total)
    if status != order.status and not t.can_move(order.status, status):
        return Outcome("stale", f"order is {order.status}; cannot become {status}", order.id)
    unit.change_order(order.id, change)
    unit.audit(
        "order.refund_applied",
        "order",
        order.id,
        order_id=order.id,
        previous=order.status,
        status=status,
        amount_refunded=refunded,
    )
    _publish(unit, order, change, "ORDER_REFUNDED")
    return Outcome("processed", None, order.id)


async def charge_refunded(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    charge = event.object
    order = await unit.lock_order(order_keys(event))
    if order is None:
        return _unknown(event)
    await _ensure_paid(unit, event, order, sp.object_id(charge))
    return await _apply_refunded_amount(unit, event, order, sp.charge_amount_refunded(charge), sp.charge_amount(charge))


async def refund_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    refund = event.object
    order = await unit.lock_order(order_keys(event))
    if order is None:
        return _unknown(event)
    refund_id = sp.object_id(refund)
    status = sp.refund_status(refund) or "pending"
    await unit.con.execute(
        UPSERT_REFUND,
        refund_id,
        order.id,
        sp.refund_charge(refund),
        sp.refund_amount(refund) or 0,
        sp.currency_of(refund) or order.currency or "",
        status,
    )
    if status != "succeeded":
        return Outcome("processed", f"refund recorded ({status})", order.id)
    await _ensure_paid(unit, event, order, sp.refund_charge(refund))
    succeeded: int = await unit.con.fetchval(SUM_SUCCEEDED_REFUNDS, order.id)
    return await _apply_refunded_amount(unit, event, order, succeeded, None)


async def charge_dispute_created(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    dispute = event.object
    order = await unit.lock_order(order_keys(event))
    if order is None:
        return _unknown(event)
    new_dispute = await unit.con.fetchval(
        INSERT_DISPUTE,
        sp.object_id(dispute),
        order.id,
        sp.dispute_charge(dispute),
        sp.dispute_amount(dispute) or 0,
        sp.currency_of(dispute) or order.currency or "",
        sp.dispute_reason(dispute),
        sp.dispute_status(dispute) or "needs_response",
    )
    await _ensure_paid(unit, event, order, sp.dispute_charge(dispute))
    change = OrderChange(status=t.DISPUTED, reason=sp.dispute_reason(dispute))
    if order.status == t.REFUNDED:
        # A dispute opened on a fully refunded order: the order stays refunded (final), but the dispute is a
        # business fact others must hear about, whichever of the refund and the dispute arrived first.
        if not new_dispute:
            return Outcome("processed", "dispute already recorded", order.id)
        unit.audit(
            "order.dispute_opened",
            "order",
            order.id,
            order_id=order.id,
            status=order.status,
            reason=change.reason,
        )
        _publish(unit, order, replace(change, status=order.status), "ORDER_DISPUTED")
        return Outcome("processed", "dispute recorded; order stays refunded", order.id)
    return _transition(unit, event, order, _move(event, change))


def plain_move(event: StripeEvent) -> OrderMove | None:
    """The move a payment event asks for, when nothing but the order's status decides whether it applies: the
    ledger then lets the database decide while it writes (UnitOfWork.apply_move). None: the handler decides
    (refunds and disputes, subscriptions, a completed session not paid yet)."""
    if event.type in _INTENT_TYPES:
        return _intent_move(event)
    if event.type not in _SESSION_TARGETS or (
        event.type == "checkout.session.completed"
        and (sp.session_mode(event.object) == "subscription" or not sp.session_is_paid(event.object))
    ):
        return None
    return _session_move(event)


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    **dict.fromkeys(_INTENT_TYPES, payment_intent_changed),
    "charge.refunded": charge_refunded,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "charge.dispute.created": charge_dispute_created,
}
