"""Out-of-order safety for subscriptions: what each Stripe event says, and which statement wins.

Stripe neither orders its deliveries nor gives more than whole seconds in `event.created`. Every event about a
subscription becomes an `Observation` carrying up to two claims, each with a sortable *version* key:

- a **state** claim (the status): from `customer.subscription.*` (the object's status), `invoice.paid` /
  `invoice.payment_succeeded` with money collected (`active`), `invoice.payment_failed` (`past_due`, or
  `incomplete` for the first invoice), `checkout.session.completed` (`pending`);
- an **object** claim (price, plan, period end, cancel-at-period-end, canceled at, amount, currency,
  customer): from the subscription object, else from the invoice, else from the checkout session.

The row keeps, per claim, the value of the observation with the greatest key, so its final content depends
only on the *set* of events applied, never on their arrival order. An event none of whose claims wins is
`stale`.

State key, compared left to right (the documented same-second tie rule):

1. phase: `pending` (0) < live statuses (1) < ended statuses `canceled`, `incomplete_expired` (2). So a
   checkout's `pending` never hides a real status whatever its timestamp, and an ended subscription never
   comes back (Stripe never reopens one);
2. `event.created` (seconds);
3. same second: status precedence, later in the lifecycle wins: incomplete < trialing < active < past_due <
   unpaid < paused (< canceled < incomplete_expired);
4. then the object's own fields: the later `current_period_end` (a renewal), then `cancel_at_period_end` true
   over false, then the later `canceled_at`;
5. last resort: the Stripe event id (greater wins) — arbitrary but the same in every arrival order.

Object key: the source first (checkout 0 < invoice 1 < subscription 2: the subscription object is the
authority on its own fields), then the same components as the state key.

"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = "pending"
ENDED = frozenset({"canceled", "incomplete_expired"})
ACTIVE = frozenset({"active", "trialing"})

# Within one phase and one second, later in the lifecycle wins.
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "incomplete": 1,
    "trialing": 2,
    "active": 3,
    "past_due": 4,
    "unpaid": 5,
    "paused": 6,
    "canceled": 7,
    "incomplete_expired": 8,
}

SOURCE_CHECKOUT = 0
SOURCE_INVOICE = 1
SOURCE_SUBSCRIPTION = 2


def phase(status: str) -> int:
    if status == PENDING:
        return 0
    return 2 if status in ENDED else 1


def _num(value: int | None) -> str:
    return f"{max(0, value or 0):012d}"


def version_key(
    *,
    source: int,
    status: str | None,
    created: int,
    period_end: int | None,
    cancel_at_period_end: bool,
    canceled_at: int | None,
    event_id: str,
) -> str:
    """A text key whose string order is the precedence order described in the module docstring."""
    rank = STATUS_RANK.get(status or "", 0)
    return "|".join(
        (
            str(source),
            str(phase(status) if status else 1),
            _num(created),
            f"{rank:02d}",
            _num(period_end),
            "1" if cancel_at_period_end else "0",
            _num(canceled_at),
            event_id,
        )
    )


@dataclass(frozen=True, slots=True)
class ObjectFields:
    """What the subscription looks like according to one event (None: the event does not say)."""

    customer_id: str | None
    price_id: str | None
    current_period_end: int | None
    cancel_at_period_end: bool
    canceled_at: int | None
    currency: str | None
    amount: int | None


@dataclass(frozen=True, slots=True)
class Observation:
    subscription_id: str
    event_id: str
    created: int
    user_id: str | None  # from the object itself (client_reference_id / metadata.user_id)
    customer_id: str | None
    status: str | None = None
    state_version: str | None = None
    fields: ObjectFields | None = None
    object_version: str | None = None
    session_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def observe(
    *,
    source: int,
    subscription_id: str,
    event_id: str,
    created: int,
    user_id: str | None,
    status: str | None,
    fields: ObjectFields | None,
    session_id: str | None = None,
) -> Observation:
    """Build an observation and its version keys (the state key ignores the source: a status is a status)."""
    state_version = None
    object_version = None
    period_end = fields.current_period_end if fields else None
    cancel = fields.cancel_at_period_end if fields else False
    canceled_at = fields.canceled_at if fields else None
    if status is not None:
        state_version = version_key(
            source=0,
            status=status,
            created=created,
            period_end=period_end,
            cancel_at_period_end=cancel,
            canceled_at=canceled_at,
            event_id=event_id,
        )[2:]
    if fields is not None:
        object_version = version_key(
            source=source,
            status=status,
            created=created,
            period_end=period_end,
            cancel_at_period_end=cancel,
            canceled_at=canceled_at,
            event_id=event_id,
        )
    return Observation(
        subscription_id,
        event_id,
        created,
        user_id,
        fields.customer_id if fields else None,
        status,
        state_version,
        fields,
        object_version,
        session_id,
    )
