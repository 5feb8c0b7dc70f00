"""The order state machine: the ONE place that knows which status an order has.

Stripe guarantees no delivery order and gives whole seconds only, so an order's status is not the last event's
word: it is derived from the facts the order has accumulated, each of which only grows, whatever order the
events arrive in:

- the payment: `paid_at` is set by the first proof of payment (a succeeded payment intent, a paid Checkout
  Session, or a refund or dispute, which cannot exist without one) and keeps the earliest time seen;
- while unpaid, the outcome of the attempts, ranked: pending < failed < canceled < expired. A failed card may be
  retried, a canceled payment intent or an expired session ends the checkout: the highest rank seen wins, so
  `expired` and `canceled` (Stripe sends both when a session expires) converge whichever arrives first;
- the refunded amount and the disputes' states, from the order's refund and dispute rows, whose own statuses
  follow the same rule: the event with the later Stripe time wins, and in the same second the status later in
  the lifecycle (`REFUND_RANK`, `DISPUTE_RANK`, `PAYMENT_RANK`).

    unpaid:  pending -> failed -> canceled -> expired      (by rank; any of them -> paid)
    paid:    paid, partially_refunded, disputed, dispute_lost, refunded   (derived, see status_of)

Money received is never forgotten: once paid, the unpaid outcomes no longer apply, and an event that asks for
one is `stale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

PENDING: Final = "pending"
PAID: Final = "paid"
PARTIALLY_REFUNDED: Final = "partially_refunded"
REFUNDED: Final = "refunded"
DISPUTED: Final = "disputed"
DISPUTE_LOST: Final = "dispute_lost"
FAILED: Final = "failed"
EXPIRED: Final = "expired"
CANCELED: Final = "canceled"

# Unpaid outcomes by rank: the highest one seen is the order's status while no payment is known.
UNPAID_RANK: Final[dict[str, int]] = {PENDING: 0, FAILED: 1, CANCELED: 2, EXPIRED: 3}
# Statuses in which money has been received.
SETTLED: Final = frozenset({PAID, PARTIALLY_REFUNDED, REFUNDED, DISPUTED, DISPUTE_LOST})
# Unpaid outcomes whose stock reservations are released.
RELEASING: Final = frozenset({FAILED, EXPIRED, CANCELED})


@dataclass(frozen=True, slots=True)
class Facts:
    """What an order has accumulated. `unpaid_status` is the highest-ranked unpaid outcome seen."""

    paid: bool
    unpaid_status: str
    amount_total: int
    amount_refunded: int
    open_disputes: int = 0
    lost_disputes: int = 0


def unpaid_outcome(current: str, seen: str) -> str:
    """The unpaid status after an attempt's outcome `seen` (the higher rank wins)."""
    return seen if UNPAID_RANK[seen] > UNPAID_RANK[current] else current


def status_of(facts: Facts) -> str:
    """The order's status for its facts. Paid orders: a full refund ends it; then a lost dispute, an open
    dispute, a partial refund; a won dispute leaves the order as it was before."""
    if not facts.paid:
        return facts.unpaid_status
    if facts.amount_total > 0 and facts.amount_refunded >= facts.amount_total:
        return REFUNDED
    if facts.lost_disputes:
        return DISPUTE_LOST
    if facts.open_disputes:
        return DISPUTED
    if facts.amount_refunded > 0:
        return PARTIALLY_REFUNDED
    return PAID


# ------------------------------------------------------------------ payments, refunds and disputes

# A payment intent's outcome: succeeded is final (a payment intent never fails after it succeeded).
PAYMENT_RANK: Final[dict[str, int]] = {"failed": 0, "canceled": 1, "succeeded": 2}
REFUND_RANK: Final[dict[str, int]] = {"pending": 0, "requires_action": 1, "succeeded": 2, "failed": 3, "canceled": 3}
DISPUTE_RANK: Final[dict[str, int]] = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "warning_closed": 2,
    "needs_response": 3,
    "under_review": 4,
    "prevented": 5,
    "won": 5,
    "lost": 5,
}
OPEN_DISPUTES: Final = frozenset({"warning_needs_response", "warning_under_review", "needs_response", "under_review"})
LOST_DISPUTES: Final = frozenset({"lost"})


def supersedes(
    at: datetime, status: str, current_at: datetime | None, current: str | None, rank: Mapping[str, int]
) -> bool:
    """Whether a status observed at Stripe time `at` replaces the row's `current` one (observed at `current_at`):
    the later time wins; in the same second, the status later in the lifecycle; then the greater name, so the
    outcome never depends on arrival order."""
    if current is None or current_at is None:
        return True
    return (at, rank.get(status, -1), status) > (current_at, rank.get(current, -1), current)


@dataclass(frozen=True, slots=True)
class RefundRow:
    amount: int
    status: str
    failed_at: datetime | None


def amount_refunded(refunds: list[RefundRow], snapshot: int | None, snapshot_at: datetime | None) -> int:
    """What has been given back: the succeeded refunds, or the newest `charge.refunded` snapshot of the charge
    (API versions whose charge lists no refunds) less the refunds that failed after it was taken, whichever is
    larger. A refund that fails gives its amount back to the order."""
    succeeded = sum(r.amount for r in refunds if r.status == "succeeded")
    if snapshot is None or snapshot_at is None:
        return succeeded
    failed_later = sum(r.amount for r in refunds if r.failed_at is not None and r.failed_at > snapshot_at)
    return max(succeeded, snapshot - failed_later)
