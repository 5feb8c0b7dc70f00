"""Stripe guarantees no delivery order: every handled event type must end in the same rows whatever order, however
many copies and however concurrently its events arrive.

Hypothesis draws one order's history (any subset of: a declined payment, a Checkout Session paid now or
asynchronously, a succeeded, failed or canceled payment intent, an expiry, `charge.refunded`, refunds created and
failed, a dispute created, funds withdrawn, updated, closed won or lost, funds reinstated) and one subscription's
(created, invoices paid and failed, updates, the subscription-mode checkout, cancellation), with same-second ties.
The history is delivered through `ingest` (what the webhook view calls) to one twin in Stripe's order, and to
another twin shuffled, with duplicate copies, in concurrent batches. A delivery that fails (a second deadlock) or
is refused (a busy row) is delivered again, as Stripe would.

Compared between the twins (their Stripe ids and event ids mapped to the same names):
- the order, its payments, refunds, disputes, stock and reservations, and the subscription row: equal (a failed
  order's reason excepted: of two failures of the same rank, the first to arrive gives it);
- no event is left `waiting` or `failed` once the history names the order;
- bridge events: the same types, except the announcements of a moment that later events overrule (a failed
  attempt, an expiry or a cancellation announced while the order was unpaid, a refund later given back); ORDER_PAID
  exactly once for a paid order; the last order event carries the order's final status and refunded amount; the
  subscription's last event carries the same payload;
- audit rows: the same actions, with the same exceptions.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.webhooks.ledger import HandlerFailed, RowsBusy, ingest
from tests.stripe_events import (
    charge,
    checkout_session,
    dispute,
    invoice,
    make_event,
    new_id,
    payment_intent,
    refund,
    subscription,
)
from tests.subscription_helpers import PRICE_PREMIUM, PRICE_PRO
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.webhook_support import seed_order, stock_of, to_event

pytestmark = pytest.mark.usefixtures("test_plans")

TOTAL = 2000
T0 = 1_760_000_000
# Each kind of event and its second in the story (ties come from pulling an event back to its predecessor).
ORDER_KINDS: dict[str, int] = {
    "pi_failed": 0,
    "completed": 1,
    "pi_succeeded": 1,
    "charge_succeeded": 1,
    "async_succeeded": 2,
    "async_failed": 2,
    "pi_canceled": 3,
    "expired": 3,
    "charge_refunded": 4,
    "refund_created": 4,
    "refund_full": 5,
    "refund_failed": 6,
    "dispute_created": 7,
    "dispute_withdrawn": 7,
    "dispute_updated": 8,
    "dispute_closed": 9,
    "dispute_reinstated": 9,
}
SUBSCRIPTION_KINDS: dict[str, int] = {
    "sub_created": 0,
    "sub_checkout": 1,
    "invoice_paid": 1,
    "sub_active": 1,
    "invoice_failed": 30,
    "sub_past_due": 30,
    "sub_recovered": 60,
    "sub_plan_change": 60,
    "sub_cancel_at_end": 90,
    "sub_deleted": 120,
}
# Objects that carry the order id (metadata): once one of them is delivered, no event may stay waiting.
LINKING = {"pi_failed", "completed", "pi_succeeded", "async_succeeded", "async_failed", "pi_canceled", "expired"}
LINKING |= {"charge_succeeded"}
LINKING |= {"charge_refunded"}
# Announcements of a moment that later events may overrule: compared by their own rule, not as a set.
HISTORY_BRIDGE = {"ORDER_PAYMENT_FAILED", "ORDER_EXPIRED", "ORDER_CANCELED", "ORDER_REFUNDED"}
HISTORY_AUDIT = {"order.failed", "order.expired", "order.canceled", "order.refund_applied"}


@st.composite
def histories(draw: st.DrawFn, kinds: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    names = list(kinds)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    chosen.sort(key=names.index)
    created: dict[str, int] = {}
    previous = T0
    for kind in chosen:
        tie = draw(st.booleans())
        created[kind] = max(previous, T0 + kinds[kind] - (1 if tie else 0))
        previous = created[kind]
    return chosen, created


class Story:
    """One twin's events, with its own Stripe ids; `names` maps each id to a name shared by both twins."""

    def __init__(self, order_id: str, product: int, won: bool, async_payment: bool) -> None:
        self.order_id, self.product = order_id, product
        self.cs, self.pi, self.ch_declined, self.ch = new_id("cs_test"), new_id("pi"), new_id("ch"), new_id("ch")
        self.re1, self.re2, self.dp = new_id("re"), new_id("re"), new_id("dp")
        self.sub, self.customer, self.user = new_id("sub", 14), new_id("cus", 14), new_id("user", 8)
        self.sub_cs = new_id("cs_test")
        self.won, self.async_payment = won, async_payment
        self.names: dict[str, str] = {
            order_id: "ORDER",
            self.cs: "CS",
            self.pi: "PI",
            self.ch_declined: "CH_DECLINED",
            self.ch: "CH",
            self.re1: "RE1",
            self.re2: "RE2",
            self.dp: "DP",
            self.sub: "SUB",
            self.sub_cs: "SUB_CS",
            self.customer: "CUS",
            self.user: "USER",
        }

    def event(self, kind: str, created: int) -> dict[str, Any]:
        event_type, obj = self._object(kind, created)
        event = make_event(event_type, obj, created=created)
        self.names[event["id"]] = f"EVT_{kind}"
        return event

    def _dispute(self, status: str, created: int) -> dict[str, Any]:
        return dispute(TOTAL, charge=self.ch, payment_intent=self.pi, dispute_id=self.dp, status=status, created=T0)

    def _sub(self, status: str, *, price: str = PRICE_PREMIUM, cancel: bool = False, period: int = 0) -> dict[str, Any]:
        return subscription(
            price_id=price,
            sub_id=self.sub,
            customer=self.customer,
            status=status,
            created=T0,
            current_period_start=T0 + period,
            current_period_end=T0 + period + 2_592_000,
            cancel_at_period_end=cancel,
        )

    def _invoice(self, created: int, *, failed: bool = False) -> dict[str, Any]:
        return invoice(
            subscription_id=self.sub,
            price_id=PRICE_PREMIUM,
            customer=self.customer,
            created=created,
            status="open" if failed else "paid",
            billing_reason="subscription_create" if created < T0 + 10 else "subscription_cycle",
        )

    def _object(self, kind: str, created: int) -> tuple[str, dict[str, Any]]:
        order, pi, ch = self.order_id, self.pi, self.ch
        session = {"session_id": self.cs, "payment_intent": pi, "amount_total": TOTAL, "created": T0}
        objects: dict[str, tuple[str, Any]] = {
            "pi_failed": (
                "payment_intent.payment_failed",
                lambda: payment_intent(
                    order,
                    TOTAL,
                    pi_id=pi,
                    status="requires_payment_method",
                    charge_id=self.ch_declined,
                    failure_code="card_declined",
                    created=T0,
                ),
            ),
            "completed": (
                "checkout.session.completed",
                lambda: checkout_session(order, payment_status="unpaid" if self.async_payment else "paid", **session),
            ),
            "pi_succeeded": (
                "payment_intent.succeeded",
                lambda: payment_intent(order, TOTAL, pi_id=pi, charge_id=ch, created=T0),
            ),
            "charge_succeeded": (
                "charge.succeeded",
                lambda: {
                    **charge(order, TOTAL, charge_id=ch, payment_intent=pi, created=T0),
                    "receipt_url": f"https://pay.stripe.com/receipts/{ch}",
                },
            ),
            "async_succeeded": (
                "checkout.session.async_payment_succeeded",
                lambda: checkout_session(order, **session),
            ),
            "async_failed": (
                "checkout.session.async_payment_failed",
                lambda: checkout_session(order, payment_status="unpaid", **session),
            ),
            "pi_canceled": (
                "payment_intent.canceled",
                lambda: payment_intent(
                    order, TOTAL, pi_id=pi, status="canceled", cancellation_reason="abandoned", created=T0
                ),
            ),
            "expired": (
                "checkout.session.expired",
                lambda: checkout_session(order, status="expired", payment_status="unpaid", **session),
            ),
            "charge_refunded": (
                "charge.refunded",
                lambda: charge(order, TOTAL, charge_id=ch, payment_intent=pi, amount_refunded=500, created=T0),
            ),
            "refund_created": (
                "refund.created",
                lambda: refund(500, charge=ch, payment_intent=pi, refund_id=self.re1, created=T0 + 4),
            ),
            "refund_full": (
                "refund.created",
                lambda: refund(TOTAL - 500, charge=ch, payment_intent=pi, refund_id=self.re2, created=T0 + 5),
            ),
            "refund_failed": (
                "refund.failed",
                lambda: refund(500, charge=ch, payment_intent=pi, refund_id=self.re1, status="failed", created=T0 + 4),
            ),
            "dispute_created": ("charge.dispute.created", lambda: self._dispute("needs_response", created)),
            "dispute_withdrawn": ("charge.dispute.funds_withdrawn", lambda: self._dispute("needs_response", created)),
            "dispute_updated": ("charge.dispute.updated", lambda: self._dispute("under_review", created)),
            "dispute_closed": (
                "charge.dispute.closed",
                lambda: self._dispute("won" if self.won else "lost", created),
            ),
            "dispute_reinstated": (
                "charge.dispute.funds_reinstated",
                lambda: self._dispute("won" if self.won else "lost", created),
            ),
            "sub_created": ("customer.subscription.created", lambda: self._sub("incomplete")),
            "sub_checkout": (
                "checkout.session.completed",
                lambda: checkout_session(
                    None,
                    mode="subscription",
                    subscription=self.sub,
                    session_id=self.sub_cs,
                    customer=self.customer,
                    user_id=self.user,
                    amount_total=999,
                    payment_intent=None,
                    created=T0,
                ),
            ),
            "invoice_paid": ("invoice.paid", lambda: self._invoice(created)),
            "sub_active": ("customer.subscription.updated", lambda: self._sub("active")),
            "invoice_failed": ("invoice.payment_failed", lambda: self._invoice(created, failed=True)),
            "sub_past_due": ("customer.subscription.updated", lambda: self._sub("past_due")),
            "sub_recovered": ("customer.subscription.updated", lambda: self._sub("active", period=2_592_000)),
            "sub_plan_change": ("customer.subscription.updated", lambda: self._sub("active", price=PRICE_PRO)),
            "sub_cancel_at_end": ("customer.subscription.updated", lambda: self._sub("active", cancel=True)),
            "sub_deleted": ("customer.subscription.deleted", lambda: self._sub("canceled", cancel=True)),
        }
        event_type, build = objects[kind]
        return event_type, build()

    def name(self, value: Any) -> Any:
        """`value` with this twin's ids replaced by the shared names (nested values too)."""
        if isinstance(value, str):
            for actual, shared in self.names.items():
                value = value.replace(actual, shared)
            return value
        if isinstance(value, dict):
            return {k: self.name(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.name(v) for v in value)
        return value


async def _deliver(pool: asyncpg.Pool, event: dict[str, Any]) -> str:
    """One delivery; a failed or refused one is delivered again, as Stripe retries it."""
    for _attempt in range(5):
        try:
            result = await ingest(pool, to_event(event), request_id=None, handlers_enabled=True, app_source="website")
        except (HandlerFailed, RowsBusy):
            continue
        return result.status
    raise AssertionError(f"{event['type']} {event['id']} never went through")


async def _snapshot(pool: asyncpg.Pool, story: Story, event_ids: list[str]) -> dict[str, Any]:
    async with pool.acquire() as con:
        order = dict(
            await con.fetchrow(
                "SELECT status, status_reason, amount_total, amount_refunded, currency, stripe_checkout_session_id,"
                " stripe_payment_intent_id, stripe_charge_id, stripe_customer_id, paid_at, charge_refunded_amount,"
                " charge_refunded_at, amount_subtotal, amount_discount, amount_tax, customer_tax_ids, receipt_url"
                " FROM orders WHERE id = $1::uuid",
                story.order_id,
            )
        )
        rows = {
            "payments": "SELECT stripe_payment_intent_id, stripe_charge_id, amount, currency, status, status_at"
            " FROM payments WHERE order_id = $1::uuid",
            "refunds": "SELECT stripe_refund_id, stripe_charge_id, amount, status, status_at, reason, failed_at"
            " FROM refunds WHERE order_id = $1::uuid",
            "disputes": "SELECT stripe_dispute_id, stripe_charge_id, amount, reason, status, status_at,"
            " evidence_due_by, funds_withdrawn_at, funds_reinstated_at FROM disputes WHERE order_id = $1::uuid",
            "reservations": "SELECT quantity, state FROM stock_reservations WHERE order_id = $1::uuid",
        }
        found = {
            key: sorted(story.name([tuple(r) for r in await con.fetch(sql, story.order_id)]), key=repr)
            for key, sql in rows.items()
        }
        order_bridge = await con.fetch(
            "SELECT event_type, payload FROM bridge_events WHERE payload->>'order_id' = $1 ORDER BY id", story.order_id
        )
        audit = await con.fetch("SELECT action FROM audit_log WHERE order_id = $1::uuid ORDER BY id", story.order_id)
        sub = await con.fetchrow(
            "SELECT user_id, stripe_customer_id, checkout_session_id, price_id, plan_id, status, current_period_end,"
            " cancel_at_period_end, canceled_at, currency, amount, state_version, object_version,"
            " last_event_created, last_event_id, activated_at FROM subscriptions WHERE stripe_subscription_id = $1",
            story.sub,
        )
        sub_bridge = await con.fetch(
            "SELECT event_type, user_id, payload FROM bridge_events WHERE payload->>'subscription_id' = $1 ORDER BY id",
            story.sub,
        )
        ledger = dict(
            await con.fetch(
                "SELECT stripe_event_id, status FROM webhook_events WHERE stripe_event_id = ANY ($1::text[])",
                event_ids,
            )
        )
        stock = await stock_of(con, story.product)
    return story.name(
        {
            "order": order,
            **found,
            "stock": stock,
            "order_bridge": [(b["event_type"], b["payload"]) for b in order_bridge],
            "audit": [a["action"] for a in audit],
            "subscription": dict(sub) if sub else None,
            "subscription_bridge": [(b["event_type"], b["user_id"], b["payload"]) for b in sub_bridge],
            "ledger": {story.name(k): v for k, v in ledger.items()},
        }
    )


def _check_bridge_and_audit(state: dict[str, Any], paid: bool) -> None:
    order = state["order"]
    types = [t for t, _ in state["order_bridge"]]
    assert types.count("ORDER_PAID") == (1 if paid else 0)
    if state["order_bridge"]:
        _last_type, last = state["order_bridge"][-1]
        assert (last["status"], last["amount_refunded"]) == (order["status"], order["amount_refunded"])
    if order["amount_refunded"] > 0:
        assert "ORDER_REFUNDED" in types and "order.refund_applied" in state["audit"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order_history=histories(ORDER_KINDS),
    sub_history=histories(SUBSCRIPTION_KINDS),
    won=st.booleans(),
    async_payment=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
async def test_every_arrival_order_ends_in_the_same_rows(
    db_pool: asyncpg.Pool,
    order_history: tuple[list[str], dict[str, int]],
    sub_history: tuple[list[str], dict[str, int]],
    won: bool,
    async_payment: bool,
    seed: random.Random,
) -> None:
    (order_kinds, order_created), (sub_kinds, sub_created) = order_history, sub_history
    twins = []
    for _twin in range(2):
        async with db_pool.acquire() as con:
            seeded = await seed_order(con, stock=10, quantity=2, unit_amount=TOTAL // 2)
        story = Story(seeded.order_id, seeded.product_ids[0], won, async_payment)
        events = [story.event(k, order_created[k]) for k in order_kinds]
        events += [story.event(k, sub_created[k]) for k in sub_kinds]
        twins.append((story, events))

    (story_a, events_a), (story_b, events_b) = twins
    # Stripe's order: by `created`, the story's own order within a second.
    for event in sorted(events_a, key=lambda e: e["created"]):
        await _deliver(db_pool, event)
    # Shuffled, some events twice, in concurrent batches.
    delivered = events_b + [e for e in events_b if seed.random() < 0.3]
    seed.shuffle(delivered)
    while delivered:
        size = seed.randint(1, 4)
        batch, delivered = delivered[:size], delivered[size:]
        await asyncio.gather(*(_deliver(db_pool, e) for e in batch))

    in_order = await _snapshot(db_pool, story_a, [e["id"] for e in events_a])
    shuffled = await _snapshot(db_pool, story_b, [e["id"] for e in events_b])
    context = {"order": order_kinds, "subscription": sub_kinds, "in_order": in_order, "shuffled": shuffled}

    if in_order["order"]["status"] == "failed":  # two failures of one rank: the first to arrive gives the reason
        for state in (in_order, shuffled):
            state["order"].pop("status_reason")
    for key in ("order", "payments", "refunds", "disputes", "reservations", "stock", "subscription"):
        assert in_order[key] == shuffled[key], (key, context)
    linked = bool(set(order_kinds) & LINKING)
    for state in (in_order, shuffled):
        statuses = Counter(state["ledger"].values())
        assert not statuses["failed"], context
        assert bool(statuses["waiting"]) == (not linked and bool(set(order_kinds) - LINKING)), context
    paid = in_order["order"]["paid_at"] is not None
    for state in (in_order, shuffled):
        _check_bridge_and_audit(state, paid)
    assert {t for t, _ in in_order["order_bridge"]} - HISTORY_BRIDGE == (
        {t for t, _ in shuffled["order_bridge"]} - HISTORY_BRIDGE
    ), context
    assert set(in_order["audit"]) - HISTORY_AUDIT == set(shuffled["audit"]) - HISTORY_AUDIT, context
    if in_order["subscription_bridge"]:
        assert in_order["subscription_bridge"][-1][1:] == shuffled["subscription_bridge"][-1][1:], context
        cancelled = [t for t, *_ in in_order["subscription_bridge"]].count("SUBSCRIPTION_CANCELLED")
        assert cancelled == [t for t, *_ in shuffled["subscription_bridge"]].count("SUBSCRIPTION_CANCELLED") <= 1
        # Activation is announced once at most: not at all when the end arrives before every active event.
        for state in (in_order, shuffled):
            assert [t for t, *_ in state["subscription_bridge"]].count("SUBSCRIPTION_ACTIVATED") <= 1, context
