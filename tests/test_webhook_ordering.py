"""Stripe does not deliver in order: any permutation of an order's events must end where in-order delivery ends.

Hypothesis draws a subset of one order's Stripe history (with same-second `created` ties) and a permutation of it.
The events are applied through `gateway.webhooks.ledger.ingest` on a pool (no HTTP): once in timeline order to one
order, once permuted to a twin order (same products and amounts). Compared:

- the order row: status, amount_refunded, amount_total, paid_at (when a real payment event is in the set);
- stock: available / held / committed of the order's product;
- bridge events: the set of types, exactly, for the payment path (ORDER_PAID, ORDER_REFUNDED, ORDER_DISPUTED),
  and ORDER_PAID exactly once when the order ended paid.

ORDER_PAYMENT_FAILED and ORDER_EXPIRED cannot be order-independent: a failure announced while the order was
pending cannot be un-announced when the payment arrives later, and a failure arriving after the payment must not
be announced (consumers would tell a paying customer that the payment failed). For those two the test asserts the
exact rule instead: the type is published iff that event was delivered while the order could still move to it
(before any payment-implying event; FAILED also not after EXPIRED).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.webhooks.ledger import ingest
from tests.stripe_events import charge, checkout_session, dispute, make_event, new_id, payment_intent, refund
from tests.webhook_support import bridge_types, order_row, seed_order, stock_of, to_event

KINDS = (
    "pi_failed",
    "completed",
    "pi_succeeded",
    "expired",
    "refund_partial",
    "refund_updated",
    "refund_full",
    "dispute",
)
# Seconds after the start of the story; ties come from the drawn offsets collapsing neighbours.
BASE_OFFSET = {
    "pi_failed": 0,
    "completed": 1,
    "pi_succeeded": 1,
    "expired": 2,
    "refund_partial": 3,
    "refund_updated": 3,
    "refund_full": 4,
    "dispute": 5,
}
PAYING = {"completed", "pi_succeeded", "refund_partial", "refund_updated", "refund_full", "dispute"}
REAL_PAYMENTS = {"completed", "pi_succeeded"}
TOTAL = 2000
PARTIAL = 500


def story(order_id: str, kinds: list[str], created: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The Stripe events of one order, by kind, with fresh ids (so two orders never share an id)."""
    cs, pi, ch, re_ = new_id("cs_test"), new_id("pi"), new_id("ch"), new_id("re")
    objects: dict[str, tuple[str, dict[str, Any]]] = {
        "pi_failed": (
            "payment_intent.payment_failed",
            payment_intent(order_id, TOTAL, pi_id=pi, status="requires_payment_method", failure_code="card_declined"),
        ),
        "completed": (
            "checkout.session.completed",
            checkout_session(order_id, amount_total=TOTAL, session_id=cs, payment_intent=pi),
        ),
        "pi_succeeded": ("payment_intent.succeeded", payment_intent(order_id, TOTAL, pi_id=pi, charge_id=ch)),
        "expired": (
            "checkout.session.expired",
            checkout_session(order_id, amount_total=TOTAL, session_id=cs, status="expired", payment_status="unpaid"),
        ),
        "refund_partial": (
            "charge.refunded",
            charge(order_id, TOTAL, charge_id=ch, payment_intent=pi, amount_refunded=PARTIAL),
        ),
        "refund_updated": (
            "refund.updated",
            refund(PARTIAL, charge=ch, payment_intent=pi, refund_id=re_, order_id=order_id),
        ),
        "refund_full": (
            "charge.refunded",
            charge(order_id, TOTAL, charge_id=ch, payment_intent=pi, amount_refunded=TOTAL),
        ),
        "dispute": (
            "charge.dispute.created",
            {**dispute(TOTAL, charge=ch, payment_intent=pi), "metadata": {"order_id": order_id}},
        ),
    }
    return {k: make_event(objects[k][0], objects[k][1], created=created[k]) for k in kinds}


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[str], dict[str, int], list[int]]:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=len(KINDS), unique=True))
    kinds.sort(key=KINDS.index)
    # Each event may be pulled back to its predecessor's second: same-second ties are common.
    start = int(time.time()) - 3600
    created: dict[str, int] = {}
    previous = start
    for kind in kinds:
        tie = draw(st.booleans())
        created[kind] = max(previous, start + BASE_OFFSET[kind] - (1 if tie else 0))
        previous = created[kind]
    permutation = draw(st.permutations(list(range(len(kinds)))))
    return kinds, created, list(permutation)


def announced(delivered: list[str], kind: str, target_blockers: set[str]) -> bool:
    """Whether `kind` was delivered before any event that makes its transition impossible."""
    if kind not in delivered:
        return False
    before = delivered[: delivered.index(kind)]
    return not (set(before) & target_blockers)


async def _state(con: asyncpg.Connection, order_id: str, product: int) -> dict[str, Any]:
    order = await order_row(con, order_id)
    return {
        "status": order["status"],
        "amount_refunded": order["amount_refunded"],
        "amount_total": order["amount_total"],
        "paid_at": order["paid_at"],
        "stock": await stock_of(con, product),
        "bridge": await bridge_types(con, order_id),
    }


@pytest.fixture
async def pool(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    yield db_pool


async def _deliver(pool: asyncpg.Pool, events: list[dict[str, Any]]) -> None:
    for event in events:
        result = await ingest(pool, to_event(event), request_id=None, handlers_enabled=True, app_source="website")
        assert result.status in ("processed", "stale", "ignored"), (event["type"], result)
        assert result.status != "ignored", (event["type"], result)  # every event must find its order


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
async def test_any_delivery_order_converges(
    pool: asyncpg.Pool, history: tuple[list[str], dict[str, int], list[int]]
) -> None:
    kinds, created, permutation = history
    timeline = sorted(kinds, key=lambda k: (created[k], KINDS.index(k)))
    shuffled = [timeline[i] for i in permutation]
    await _check(pool, kinds, created, timeline, shuffled)


async def _check(
    pool: asyncpg.Pool, kinds: list[str], created: dict[str, int], timeline: list[str], shuffled: list[str]
) -> None:
    async with pool.acquire() as con:
        a = await seed_order(con, stock=10, quantity=2, unit_amount=TOTAL // 2)
        b = await seed_order(con, stock=10, quantity=2, unit_amount=TOTAL // 2)
    events_a = story(a.order_id, kinds, created)
    events_b = story(b.order_id, kinds, created)
    await _deliver(pool, [events_a[k] for k in timeline])
    await _deliver(pool, [events_b[k] for k in shuffled])

    async with pool.acquire() as con:
        in_order = await _state(con, a.order_id, a.product_ids[0])
        permuted = await _state(con, b.order_id, b.product_ids[0])
    context = {"timeline": timeline, "delivered": shuffled, "in_order": in_order, "permuted": permuted}

    for key in ("status", "amount_refunded", "amount_total", "stock"):
        assert in_order[key] == permuted[key], (key, context)
    if set(kinds) & REAL_PAYMENTS:
        first_payment = min(created[k] for k in kinds if k in REAL_PAYMENTS)
        expected = datetime.fromtimestamp(first_payment, UTC)
        assert in_order["paid_at"] == permuted["paid_at"] == expected, context

    payment_path = {"ORDER_PAID", "ORDER_REFUNDED", "ORDER_DISPUTED"}
    assert set(in_order["bridge"]) & payment_path == set(permuted["bridge"]) & payment_path, context
    paid = bool(set(kinds) & PAYING)
    for state, delivered in ((in_order, timeline), (permuted, shuffled)):
        assert state["bridge"].count("ORDER_PAID") == (1 if paid else 0), context
        assert ("ORDER_EXPIRED" in state["bridge"]) == announced(delivered, "expired", PAYING), context
        assert ("ORDER_PAYMENT_FAILED" in state["bridge"]) == announced(delivered, "pi_failed", PAYING | {"expired"}), (
            context
        )
    # Stock invariant: 10 = available + held + committed, and paid orders hold exactly their 2 units committed.
    available, held, committed = permuted["stock"]
    assert available + held + committed == 10
    assert (held, committed) == ((0, 2) if paid else (0, 0) if {"pi_failed", "expired"} & set(kinds) else (2, 0))
