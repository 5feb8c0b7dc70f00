"""The schema registry: every type the code can publish is listed, every listed type is produced here by the
real handlers and validates, and an invalid event fails its transaction."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.bridge import registry as reg
from gateway.unit_of_work import UnitOfWork
from tests.factories import create_order, create_product
from tests.stripe_events import (
    charge,
    checkout_session,
    dispute,
    make_event,
    new_id,
    payment_intent,
    subscription,
)
from tests.subscription_helpers import PRICE_PREMIUM, deliver
from tests.subscription_helpers import test_plans as test_plans  # fixture

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
EVENT_TYPE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


def publishable_types() -> set[str]:
    """Event-type-looking strings in modules that publish: publish("X", ...) calls, BRIDGE_TYPES values, and
    UPPER_SNAKE string constants / arguments of the publishing modules."""
    found: set[str] = set()
    for path in GATEWAY.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if ".publish(" not in source and "_publish(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and EVENT_TYPE.match(node.value):
                if node.value.startswith(("ORDER_", "SUBSCRIPTION_")) or path.name != "unit_of_work.py":
                    found.add(node.value)
    return found


def test_every_publishable_type_is_in_the_registry() -> None:
    types = publishable_types()
    assert {"ORDER_PAID", "SUBSCRIPTION_ACTIVATED", "SUBSCRIPTION_CANCELLED"} <= types
    missing = types - set(reg.registry().events)
    assert not missing, f"published but not in bridge/schema-registry.yaml: {sorted(missing)}"


def test_registry_file_is_valid_and_versioned() -> None:
    registry = reg.load_registry()
    assert registry.registry_version >= 1
    for spec in registry.events.values():
        assert spec.version >= 1
        assert "source" in spec.fields and spec.fields["source"].enum == ("stripe",)


@pytest.mark.parametrize(
    "document, problem",
    [
        (
            {
                "registry_version": 1,
                "events": {"lower_case": {"version": 1, "payload": {"a": {"type": "string"}}}},
            },
            "UPPER_SNAKE",
        ),
        (
            {"registry_version": 1, "events": {"A_B": {"version": 1, "payload": {"a": {"type": "float"}}}}},
            "type",
        ),
        ({"registry_version": 1, "events": {"A_B": {"payload": {"a": {"type": "string"}}}}}, "version"),
        ({"events": {}}, "registry_version"),
    ],
)
def test_invalid_registry_files_are_refused(document: Any, problem: str) -> None:
    with pytest.raises(reg.RegistryFileError, match=problem):
        reg.parse_registry(document)


# ------------------------------------------------------------------ each registry entry, produced for real


async def _order(con: asyncpg.Connection) -> str:
    product = await create_product(con, sku=new_id("SKU", 6), stock=5)
    return await create_order(con, [(product, 1)])


async def produce(pool: asyncpg.Pool, event_type: str) -> None:
    """Drive the real handlers until `event_type` is published."""
    async with pool.acquire() as con:
        order_id = await _order(con)
    pi, ch = new_id("pi"), new_id("ch")
    paid_session = checkout_session(order_id, payment_intent=pi, user_id="user-r")
    if event_type.startswith("SUBSCRIPTION_"):
        sub_id = new_id("sub", 14)
        await deliver(
            pool,
            make_event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, user_id="user-r", created=1_700_000_000),
                created=1_700_000_000,
            ),
        )
        await deliver(
            pool,
            make_event(
                "customer.subscription.updated",
                subscription(
                    price_id=PRICE_PREMIUM,
                    sub_id=sub_id,
                    user_id="user-r",
                    created=1_700_000_000,
                    cancel_at_period_end=True,
                ),
                created=1_700_000_100,
            ),
        )
        await deliver(
            pool,
            make_event(
                "customer.subscription.deleted",
                subscription(
                    price_id=PRICE_PREMIUM,
                    sub_id=sub_id,
                    user_id="user-r",
                    status="canceled",
                    created=1_700_000_000,
                ),
                created=1_700_000_200,
            ),
        )
    elif event_type == "ORDER_PAYMENT_FAILED":
        await deliver(
            pool,
            make_event(
                "payment_intent.payment_failed",
                payment_intent(
                    order_id, 1000, pi_id=pi, status="requires_payment_method", failure_code="card_declined"
                ),
            ),
        )
    elif event_type == "ORDER_EXPIRED":
        await deliver(
            pool,
            make_event(
                "checkout.session.expired",
                checkout_session(order_id, status="expired", payment_status="unpaid"),
            ),
        )
    elif event_type == "ORDER_CANCELED":
        await deliver(
            pool,
            make_event(
                "payment_intent.canceled",
                payment_intent(order_id, 1000, pi_id=pi, status="canceled", cancellation_reason="abandoned"),
            ),
        )
    else:
        await deliver(
            pool,
            make_event("payment_intent.succeeded", payment_intent(order_id, 1000, pi_id=pi, charge_id=ch)),
        )
        await deliver(pool, make_event("checkout.session.completed", paid_session))
        if event_type == "ORDER_REFUNDED":
            await deliver(
                pool,
                make_event(
                    "charge.refunded",
                    charge(order_id, 1000, charge_id=ch, payment_intent=pi, amount_refunded=400),
                ),
            )
        if event_type == "ORDER_DISPUTED":
            await deliver(pool, make_event("charge.dispute.created", dispute(1000, charge=ch, payment_intent=pi)))
        if event_type in ("ORDER_DISPUTE_WON", "ORDER_DISPUTE_LOST"):
            outcome = event_type.removeprefix("ORDER_DISPUTE_").lower()
            closed = dispute(1000, charge=ch, payment_intent=pi, status=outcome)
            await deliver(pool, make_event("charge.dispute.closed", closed))


@pytest.mark.usefixtures("test_plans")
@pytest.mark.parametrize("event_type", sorted(reg.registry().events))
async def test_each_registry_entry_is_produced_and_valid(db_pool: asyncpg.Pool, event_type: str) -> None:
    await produce(db_pool, event_type)
    async with db_pool.acquire() as con:
        rows = await con.fetch("SELECT user_id, payload, metadata FROM bridge_events WHERE event_type = $1", event_type)
    assert rows, f"no test scenario produced {event_type}"
    for row in rows:
        reg.validate_event(event_type, row["user_id"], row["payload"], row["metadata"])


async def test_an_invalid_event_fails_the_transaction(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        with pytest.raises(reg.BridgeSchemaError, match="not_declared_field"):
            async with con.transaction():
                unit = UnitOfWork(con, actor="test", source_event_id="evt_invalid", request_id=None)
                await unit.audit("test.change", "thing", "1")
                await unit.publish("ORDER_PAID", "u", {"order_id": "x", "not_declared_field": 1})
        with pytest.raises(reg.BridgeSchemaError, match="not in the schema registry"):
            unit = UnitOfWork(con, actor="test", source_event_id="evt_x", request_id=None)
            await unit.publish("NOPE_EVENT", None, {})
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 0


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"status": "active"}, "required"),
        ({"subscription_id": 5}, "expected string"),
        ({"amount": True}, "expected integer, got boolean"),
        ({"status": "weird"}, "not one of"),
    ],
)
def test_payload_problems_are_reported(payload: dict[str, Any], problem: str) -> None:
    good = {
        "subscription_id": "sub_1",
        "plan_id": "premium",
        "status": "active",
        "customer_id": None,
        "currency": "eur",
        "amount": 999,
        "source": "stripe",
    }
    reg.validate_event("SUBSCRIPTION_UPDATED", None, good)
    with pytest.raises(reg.BridgeSchemaError, match=problem):
        reg.validate_event(
            "SUBSCRIPTION_UPDATED",
            None,
            {**good, **payload} if "status" not in payload or payload["status"] != "active" else payload,
        )
