"""One-time payments: checkout sessions, payment intents, charges, refunds and disputes move orders and their stock.

Every handler reads what its event says (`Ask`: the Stripe ids and amounts of the order, a proof of payment, an
attempt's outcome) through the payload adapter, locks the order, records the event's own row (payment, refund,
dispute), then `_settle` lets the state machine (gateway/orders/state_machine.py) give the order's status and
applies what the move implies: stock committed or released, audit rows, bridge events.

An event that names no order of ours is ignored, except one that names its order only by Stripe payment ids no
order knows yet (a refund or dispute, a payment intent or charge whose order learns its ids later): it is kept
(`waiting`) and applied by the ledger as soon as an order learns one of those ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import stock
from gateway import stripe_payload as sp
from gateway.orders import queries as q
from gateway.orders import state_machine as sm
from gateway.orders.queries import Order, OrderKeys
from gateway.unit_of_work import UnitOfWork
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers import subscriptions
from gateway.webhooks.handlers.base import Handler, Outcome

log = logging.getLogger("gateway.webhooks.orders")

# The bridge event of each status an order moves to.
BRIDGE_TYPES = {
    sm.PAID: "ORDER_PAID",
    sm.FAILED: "ORDER_PAYMENT_FAILED",
    sm.EXPIRED: "ORDER_EXPIRED",
    sm.CANCELED: "ORDER_CANCELED",
}
ORDER_REFUNDED = "ORDER_REFUNDED"
DISPUTE_BRIDGE_TYPES = {"opened": "ORDER_DISPUTED", "won": "ORDER_DISPUTE_WON", "lost": "ORDER_DISPUTE_LOST"}
# Objects that never carry our order id, or whose order may learn their ids later: kept when no order knows them.
KEPT_OBJECTS = frozenset({"payment_intent", "charge", "refund", "dispute"})


def order_keys(event: StripeEvent) -> OrderKeys:
    """Every id by which `event` may point at an order."""
    ids = event.ids
    return OrderKeys(ids.order_id, ids.checkout_session_id, ids.payment_intent_id, ids.charge_id)


def _at(unix: int | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix is not None else None


def _created(event: StripeEvent) -> datetime:
    return datetime.fromtimestamp(event.created, UTC)


# Whether a subscription invoice's event named these payment ids: their payment is the invoice's, not an order's.
INVOICE_PAYMENT = """
SELECT stripe_event_id FROM webhook_events
WHERE type LIKE 'invoice.%' AND (payment_intent_id = ANY ($1::text[]) OR charge_id = ANY ($1::text[]))
LIMIT 1
"""


async def _not_found(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    """No order matches: ignored, or kept (`waiting`) when the event names its order only by payment ids that no
    order, and no subscription invoice, knows yet. An invoice event that names them later settles it `ignored`
    (gateway/webhooks/ledger.py)."""
    kind = sp.object_type(event.type, event.object) or "object"
    ids = event.ids
    payment_ids = [i for i in (ids.payment_intent_id, ids.charge_id) if i]
    if kind not in KEPT_OBJECTS or ids.order_id is not None or not payment_ids:
        return Outcome("ignored", f"no order matches this {kind}")
    if sp.invoice_of(event.object) is not None or await unit.con.fetchval(INVOICE_PAYMENT, payment_ids):
        return Outcome("ignored", f"this {kind} is a subscription invoice's payment, not an order's")
    return Outcome("waiting", f"no order knows this {kind} yet; kept until one does")


@dataclass(frozen=True, slots=True)
class Ask:
    """What an event tells its order: ids and amounts it may not know yet, a proof of payment at Stripe time
    `paid_at`, or the outcome of an attempt (`unpaid`: failed, canceled, expired) and its reason."""

    session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None  # only a charge that succeeded
    customer_id: str | None = None
    amount_total: int | None = None
    currency: str | None = None
    paid_at: datetime | None = None
    unpaid: str | None = None
    reason: str | None = None
    # A `charge.refunded` snapshot: the charge's refunded amount at Stripe time `at`.
    charge_refunded: tuple[datetime, int] | None = None
    # What the Checkout Session says was charged (promotion codes, tax) and the customer's tax ids.
    amounts: sp.SessionAmounts | None = None
    tax_ids: tuple[dict[str, str], ...] = ()
    receipt_url: str | None = None  # the succeeded charge's receipt


@dataclass
class Effects:
    """What the event's own rows changed, for `_settle`: `recount` when refunds or disputes changed, the dispute
    announcements to publish once the order's status is known."""

    changed: bool = False
    recount: bool = False
    disputes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _learn(order: Order, ask: Ask) -> bool:
    """Fill in what the order does not know yet; True when it learnt a Stripe id kept events may name it by."""
    learned = False
    for name, value in (
        ("stripe_checkout_session_id", ask.session_id),
        ("stripe_payment_intent_id", ask.payment_intent_id),
        ("stripe_charge_id", ask.charge_id),
    ):
        if value is not None and getattr(order, name) is None:
            setattr(order, name, value)
            learned = True
    if order.stripe_customer_id is None:
        order.stripe_customer_id = ask.customer_id
    if order.amount_total == 0 and ask.amount_total:
        order.amount_total = ask.amount_total
    if order.currency is None:
        order.currency = ask.currency
    if order.amount_subtotal is None and ask.amounts is not None and ask.amounts.subtotal is not None:
        order.amount_subtotal = ask.amounts.subtotal
        order.amount_discount, order.amount_tax = ask.amounts.discount, ask.amounts.tax
    if not order.customer_tax_ids and ask.tax_ids:
        order.customer_tax_ids = list(ask.tax_ids)
    if order.receipt_url is None:
        order.receipt_url = ask.receipt_url
    return learned


def _payload(order: Order, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "status": status,
        "amount": order.amount_total,
        "amount_refunded": order.amount_refunded,
        "currency": order.currency,
        "session_id": order.stripe_checkout_session_id,
        "payment_intent_id": order.stripe_payment_intent_id,
        "customer_id": order.stripe_customer_id,
        "amount_subtotal": order.amount_subtotal,
        "amount_discount": order.amount_discount,
        "amount_tax": order.amount_tax,
        "customer_tax_ids": order.customer_tax_ids,
        "receipt_url": order.receipt_url,
        **extra,
    }


async def _paid_facts(
    con: asyncpg.Connection, order: Order, before: Order, recount: bool
) -> tuple[int, int, str | None]:
    """(open, lost, reason) of a paid order's disputes, the reason being the newest open or lost one's. Without a
    refund or dispute change they are what its status says (an order unpaid until now has neither: each of them is
    a proof of payment)."""
    if recount:
        refunds = await q.order_refunds(con, order.id)
        order.amount_refunded = sm.amount_refunded(refunds, order.charge_refunded_amount, order.charge_refunded_at)
        row = await con.fetchrow(q.ORDER_DISPUTE_COUNTS, order.id, list(sm.OPEN_DISPUTES), list(sm.LOST_DISPUTES))
        return row["open"], row["lost"], row["reason"]
    disputed = before.status in (sm.DISPUTED, sm.DISPUTE_LOST)
    reason = before.status_reason if disputed else None
    return int(before.status == sm.DISPUTED), int(before.status == sm.DISPUTE_LOST), reason


def _take_facts(order: Order, ask: Ask) -> None:
    """The facts `ask` brings that only grow: the earliest proof of payment, the newest charge snapshot."""
    if ask.charge_refunded is not None:
        at, refunded = ask.charge_refunded
        snapshot = (order.charge_refunded_at, order.charge_refunded_amount)
        if order.charge_refunded_at is None or (at, refunded) > snapshot:
            # The newest snapshot of the charge wins (same second: the larger amount, refunds only add up).
            order.charge_refunded_at, order.charge_refunded_amount = at, refunded
    if ask.paid_at is not None and (order.paid_at is None or ask.paid_at < order.paid_at):
        order.paid_at = ask.paid_at


async def _decide_status(unit: UnitOfWork, order: Order, before: Order, ask: Ask, effects: Effects) -> str:
    """The order's status for its facts (gateway/orders/state_machine.py), with its reason."""
    paid = order.paid_at is not None
    unpaid = before.status if before.status in sm.UNPAID_RANK else sm.PENDING
    if ask.unpaid is not None:
        unpaid = sm.unpaid_outcome(unpaid, ask.unpaid)
    open_disputes, lost_disputes, dispute_reason = (
        await _paid_facts(unit.con, order, before, effects.recount) if paid else (0, 0, None)
    )
    status = sm.status_of(
        sm.Facts(paid, unpaid, order.amount_total, order.amount_refunded, open_disputes, lost_disputes)
    )
    if status in (sm.DISPUTED, sm.DISPUTE_LOST):
        order.status_reason = dispute_reason
    elif status != before.status:
        order.status_reason = ask.reason if status in sm.UNPAID_RANK else None
    order.status = status
    return status


async def _apply_move(unit: UnitOfWork, order: Order, before: Order, ask: Ask, effects: Effects) -> None:
    """What the move from `before` to `order` implies: stock committed or released, audit rows, bridge events."""
    status = order.status
    if status in sm.SETTLED and before.status not in sm.SETTLED:
        oversold = await stock.commit_for_order(unit.con, order.id)
        if oversold:
            log.warning("stock oversold on a late payment", extra={"orderId": order.id, "status": status})
            await unit.audit("stock.oversold", "order", order.id, order_id=order.id, products=oversold)
        await unit.audit("order.paid", "order", order.id, order_id=order.id, previous=before.status)
        await unit.publish(BRIDGE_TYPES[sm.PAID], order.user_id, _payload(order, sm.PAID))
    elif status in sm.RELEASING and status != before.status:
        await stock.release_for_order(unit.con, order.id, f"order_{status}")
        await unit.audit(
            f"order.{status}", "order", order.id, order_id=order.id, previous=before.status, reason=ask.reason
        )
        await unit.publish(BRIDGE_TYPES[status], order.user_id, _payload(order, status))
    if order.amount_refunded != before.amount_refunded:
        await unit.audit(
            "order.refund_applied",
            "order",
            order.id,
            order_id=order.id,
            previous=before.status,
            status=status,
            amount_refunded=order.amount_refunded,
        )
        await unit.publish(ORDER_REFUNDED, order.user_id, _payload(order, status))
    for event_type, extra in effects.disputes:
        await unit.publish(event_type, order.user_id, _payload(order, status, **extra))


async def _settle(unit: UnitOfWork, event: StripeEvent, order: Order, ask: Ask, effects: Effects) -> Outcome:
    """Apply `ask` and the event's row changes to the locked `order`: its status from the state machine, then
    the stock, audit rows and bridge events the move implies, then the row."""
    before = order.copy()
    learned = _learn(order, ask)
    _take_facts(order, ask)
    status = await _decide_status(unit, order, before, ask, effects)
    await _apply_move(unit, order, before, ask, effects)
    if order == before and not effects.changed:
        if ask.unpaid is not None and status != ask.unpaid:
            return Outcome("stale", f"order is {status}; {event.type} cannot move it to {ask.unpaid}", order.id)
        return Outcome("processed", f"order already {status}", order.id)
    if order != before:
        await q.save_order(unit.con, order)
    return Outcome("processed", None, order.id, learned_ids=learned)


# ------------------------------------------------------------------ checkout sessions


async def _order_for_session(unit: UnitOfWork, event: StripeEvent, *, create: bool) -> tuple[Order | None, bool]:
    """The session's order, locked; with `create`, a paid session we did not start (Payment Link, dashboard)
    makes its own order. The flag says the order was created."""
    order = await q.lock_order(unit.con, order_keys(event))
    session = event.object
    if order is not None or not create or sp.order_id_of(session) is not None:
        return order, False
    ids = sp.checkout_session_ids(session)
    await unit.con.execute(
        q.CREATE_ORDER_FROM_SESSION,
        sp.user_id_of(session),
        sp.session_amount_total(session) or 0,
        sp.currency_of(session),
        ids.session_id,
        ids.customer_id,
    )
    order = await q.lock_order(unit.con, order_keys(event))
    if order is not None:
        await unit.audit("order.created", "order", order.id, order_id=order.id, source="checkout_session")
    return order, order is not None


def _session_ask(event: StripeEvent, **decided: Any) -> Ask:
    session = event.object
    ids = sp.checkout_session_ids(session)
    return Ask(
        session_id=ids.session_id,
        payment_intent_id=ids.payment_intent_id,
        customer_id=ids.customer_id,
        amount_total=sp.session_amount_total(session),
        currency=sp.currency_of(session),
        amounts=sp.session_amounts(session),
        tax_ids=sp.session_customer_tax_ids(session),
        **decided,
    )


async def _session_event(unit: UnitOfWork, event: StripeEvent, *, create: bool, **decided: Any) -> Outcome:
    order, created = await _order_for_session(unit, event, create=create)
    if order is None:
        return Outcome("ignored", "no order matches this checkout.session")
    outcome = await _settle(unit, event, order, _session_ask(event, **decided), Effects(changed=created))
    if created:
        return Outcome(outcome.status, outcome.reason, outcome.order_id, learned_ids=True)
    return outcome


async def checkout_session_completed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    if sp.session_mode(event.object) == "subscription":
        return await subscriptions.checkout_session_completed(unit, event)
    if not sp.session_is_paid(event.object):
        # Delayed payment methods: the money comes with checkout.session.async_payment_succeeded.
        outcome = await _session_event(unit, event, create=True)
        if outcome.status != "processed":
            return outcome
        return Outcome("processed", "awaiting asynchronous payment", outcome.order_id, outcome.learned_ids)
    return await _session_event(unit, event, create=True, paid_at=_created(event))


async def checkout_session_async_payment_succeeded(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    return await _session_event(unit, event, create=True, paid_at=_created(event))


async def checkout_session_async_payment_failed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    return await _session_event(unit, event, create=False, unpaid=sm.FAILED, reason="async_payment_failed")


async def checkout_session_expired(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    return await _session_event(unit, event, create=False, unpaid=sm.EXPIRED, reason="checkout_session_expired")


# ------------------------------------------------------------------ payment intents


def _intent_outcome(event: StripeEvent) -> tuple[str, dict[str, Any]]:
    """The payment row's status and what the event asks of the order."""
    pi = event.object
    if event.type == "payment_intent.succeeded":
        return "succeeded", {
            "paid_at": _created(event),
            "charge_id": sp.payment_intent_latest_charge(pi),
            "receipt_url": sp.payment_intent_receipt_url(pi),
        }
    if event.type == "payment_intent.payment_failed":
        code, _decline = sp.payment_intent_failure(pi)
        return "failed", {"unpaid": sm.FAILED, "reason": code or "payment_failed"}
    reason = sp.payment_intent_cancellation_reason(pi) or "payment_intent_canceled"
    return "canceled", {"unpaid": sm.CANCELED, "reason": reason}


async def _record_payment(con: asyncpg.Connection, payment: q.Payment) -> bool:
    """The payment intent's row: succeeded is final, whatever arrives before or after it; otherwise the later
    event wins. True when it changed."""
    if await con.fetchval(
        q.INSERT_PAYMENT,
        payment.order_id,
        payment.payment_intent_id,
        payment.charge_id,
        payment.amount,
        payment.currency,
        payment.status,
        payment.status_at,
    ):
        return True
    row = await con.fetchrow(q.LOCK_PAYMENT, payment.payment_intent_id)
    if row["status"] == "succeeded":
        return False
    if payment.status != "succeeded" and not sm.supersedes(
        payment.status_at, payment.status, row["status_at"], row["status"], sm.PAYMENT_RANK
    ):
        return False
    await con.execute(
        q.UPDATE_PAYMENT,
        payment.payment_intent_id,
        payment.charge_id,
        payment.amount,
        payment.status,
        payment.status_at,
    )
    return True


async def payment_intent_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    pi = event.object
    order = await q.lock_order(unit.con, order_keys(event))
    if order is None:
        return await _not_found(unit, event)
    payment_status, decided = _intent_outcome(event)
    pi_id = sp.object_id(pi)
    changed = False
    if pi_id is not None:
        changed = await _record_payment(
            unit.con,
            q.Payment(
                order_id=order.id,
                payment_intent_id=pi_id,
                charge_id=decided.get("charge_id"),
                amount=sp.payment_intent_amount(pi) or 0,
                currency=sp.currency_of(pi) or order.currency or "",
                status=payment_status,
                status_at=_created(event),
            ),
        )
    ask = Ask(
        payment_intent_id=pi_id,
        customer_id=sp.customer_id(pi),
        amount_total=sp.payment_intent_amount(pi),
        currency=sp.currency_of(pi),
        **decided,
    )
    return await _settle(unit, event, order, ask, Effects(changed=changed))


# ------------------------------------------------------------------ charges and refunds


def _refund_row(order: Order, refund: sp.JsonObject, at: datetime) -> q.Refund | None:
    refund_id = sp.object_id(refund)
    if refund_id is None:
        return None
    return q.Refund(
        refund_id=refund_id,
        order_id=order.id,
        charge_id=sp.refund_charge(refund),
        amount=sp.refund_amount(refund) or 0,
        currency=sp.currency_of(refund) or order.currency or "",
        status=sp.refund_status(refund) or "pending",
        status_at=at,
        reason=sp.refund_reason(refund),
    )


async def _record_refund(con: asyncpg.Connection, refund: q.Refund) -> bool:
    """The refund's row; the later event wins (same second: later in the lifecycle). True when it changed."""
    failed_at = refund.status_at if refund.status == "failed" else None
    row = await con.fetchrow(q.LOCK_REFUND, refund.refund_id)
    if row is None:
        await con.execute(
            q.INSERT_REFUND,
            refund.refund_id,
            refund.order_id,
            refund.charge_id,
            refund.amount,
            refund.currency,
            refund.status,
            refund.status_at,
            refund.reason,
            failed_at,
        )
        return True
    if not sm.supersedes(refund.status_at, refund.status, row["status_at"], row["status"], sm.REFUND_RANK):
        return False
    await con.execute(
        q.UPDATE_REFUND, refund.refund_id, refund.amount, refund.status, refund.status_at, refund.reason, failed_at
    )
    return True


def _proof_of_payment(event: StripeEvent, charge_id: str | None, payment_intent_id: str | None, **more: Any) -> Ask:
    """A refund or dispute proves its charge succeeded: the order is paid, whichever event arrives first."""
    return Ask(payment_intent_id=payment_intent_id, charge_id=charge_id, paid_at=_created(event), **more)


async def charge_refunded(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    charge = event.object
    order = await q.lock_order(unit.con, order_keys(event))
    if order is None:
        return await _not_found(unit, event)
    at = _created(event)
    effects = Effects(recount=True)
    for listed in sp.charge_refunds(charge):  # API versions up to 2022-08-01 list the charge's refunds
        row = _refund_row(order, listed, at)
        if row is not None:
            effects.changed |= await _record_refund(unit.con, row)
    ask = _proof_of_payment(
        event,
        sp.object_id(charge),
        sp.charge_payment_intent(charge),
        customer_id=sp.customer_id(charge),
        currency=sp.currency_of(charge),
        charge_refunded=(at, sp.charge_amount_refunded(charge)),
        receipt_url=sp.charge_receipt_url(charge),
    )
    return await _settle(unit, event, order, ask, effects)


async def charge_succeeded(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    """A succeeded charge: a proof of payment, the order's charge and its receipt."""
    charge = event.object
    order = await q.lock_order(unit.con, order_keys(event))
    if order is None:
        return await _not_found(unit, event)
    ask = _proof_of_payment(
        event,
        sp.object_id(charge),
        sp.charge_payment_intent(charge),
        customer_id=sp.customer_id(charge),
        currency=sp.currency_of(charge),
        receipt_url=sp.charge_receipt_url(charge),
    )
    return await _settle(unit, event, order, ask, Effects())


async def refund_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    refund = event.object
    order = await q.lock_order(unit.con, order_keys(event))
    if order is None:
        return await _not_found(unit, event)
    row = _refund_row(order, refund, _created(event))
    changed = await _record_refund(unit.con, row) if row is not None else False
    ask = _proof_of_payment(event, sp.refund_charge(refund), sp.refund_payment_intent(refund))
    return await _settle(unit, event, order, ask, Effects(changed=changed, recount=True))


# ------------------------------------------------------------------ disputes


async def _record_dispute(unit: UnitOfWork, event: StripeEvent, order: Order) -> Effects:
    """The dispute's row: its status from the later event (same second: later in the lifecycle), funds
    withdrawn and reinstated at the earliest time seen. A new dispute, and one that reaches won or lost, is
    announced (ORDER_DISPUTED, ORDER_DISPUTE_WON, ORDER_DISPUTE_LOST) whatever order its events arrive in."""
    dispute = event.object
    dispute_id = sp.object_id(dispute)
    effects = Effects(recount=True)
    if dispute_id is None:
        return effects
    at = _created(event)
    status = sp.dispute_status(dispute) or "needs_response"
    withdrawn = at if event.type == "charge.dispute.funds_withdrawn" else None
    reinstated = at if event.type == "charge.dispute.funds_reinstated" else None
    row = await unit.con.fetchrow(q.LOCK_DISPUTE, dispute_id)
    previous = None if row is None else row["status"]
    if row is None:
        await unit.con.execute(
            q.INSERT_DISPUTE,
            dispute_id,
            order.id,
            sp.dispute_charge(dispute),
            sp.dispute_amount(dispute) or 0,
            sp.currency_of(dispute) or order.currency or "",
            sp.dispute_reason(dispute),
            status,
            at,
            _at(sp.dispute_evidence_due_by(dispute)),
            withdrawn,
            reinstated,
        )
    else:
        withdrawn = _earliest(row["funds_withdrawn_at"], withdrawn)
        reinstated = _earliest(row["funds_reinstated_at"], reinstated)
        funds_changed = (withdrawn, reinstated) != (row["funds_withdrawn_at"], row["funds_reinstated_at"])
        if sm.supersedes(at, status, row["status_at"], row["status"], sm.DISPUTE_RANK):
            await unit.con.execute(
                q.UPDATE_DISPUTE,
                dispute_id,
                sp.dispute_amount(dispute) or 0,
                sp.dispute_reason(dispute),
                status,
                at,
                _at(sp.dispute_evidence_due_by(dispute)),
                withdrawn,
                reinstated,
            )
        elif funds_changed:
            status = row["status"]
            await unit.con.execute(q.UPDATE_DISPUTE_FUNDS, dispute_id, withdrawn, reinstated)
        else:
            return effects
    effects.changed = True
    extra = {"dispute_id": dispute_id, "dispute_status": status}
    if row is None:
        effects.disputes.append((DISPUTE_BRIDGE_TYPES["opened"], extra))
        await unit.audit("dispute.opened", "dispute", dispute_id, order_id=order.id, status=status)
    if status in ("won", "lost") and previous != status:
        effects.disputes.append((DISPUTE_BRIDGE_TYPES[status], extra))
        await unit.audit(f"dispute.{status}", "dispute", dispute_id, order_id=order.id)
    for action, now, before in (
        ("dispute.funds_withdrawn", withdrawn, None if row is None else row["funds_withdrawn_at"]),
        ("dispute.funds_reinstated", reinstated, None if row is None else row["funds_reinstated_at"]),
    ):
        if now is not None and before is None:
            await unit.audit(action, "dispute", dispute_id, order_id=order.id)
    return effects


def _earliest(current: datetime | None, seen: datetime | None) -> datetime | None:
    if current is None or (seen is not None and seen < current):
        return seen
    return current


async def dispute_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    dispute = event.object
    order = await q.lock_order(unit.con, order_keys(event))
    if order is None:
        return await _not_found(unit, event)
    effects = await _record_dispute(unit, event, order)
    ask = _proof_of_payment(
        event, sp.dispute_charge(dispute), sp.dispute_payment_intent(dispute), reason=sp.dispute_reason(dispute)
    )
    return await _settle(unit, event, order, ask, effects)


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_async_payment_succeeded,
    "checkout.session.async_payment_failed": checkout_session_async_payment_failed,
    "checkout.session.expired": checkout_session_expired,
    "payment_intent.succeeded": payment_intent_changed,
    "payment_intent.payment_failed": payment_intent_changed,
    "payment_intent.canceled": payment_intent_changed,
    "charge.succeeded": charge_succeeded,
    "charge.refunded": charge_refunded,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "refund.failed": refund_changed,
    "charge.refund.updated": refund_changed,
    "charge.dispute.created": dispute_changed,
    "charge.dispute.updated": dispute_changed,
    "charge.dispute.closed": dispute_changed,
    "charge.dispute.funds_withdrawn": dispute_changed,
    "charge.dispute.funds_reinstated": dispute_changed,
}
