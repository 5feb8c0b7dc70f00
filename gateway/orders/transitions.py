"""The order state machine. Stripe does not guarantee delivery order, so every event asks "may the order move
from here to there?"; a move that is not allowed is never applied and the event is recorded as stale.

    pending -> paid -> partially_refunded -> refunded
                 \\-> disputed -> refunded
    pending -> failed | expired | canceled
    failed  -> paid (a failed attempt may still succeed later) | expired | canceled
    expired | canceled -> paid (money arrived after the session ended: the payment wins, stock is taken again)

The graph makes concurrent or reordered events converge: whichever order `paid` and `expired` arrive in, the
order ends `paid`; refund amounts only grow.
"""

from __future__ import annotations

from typing import Final

PENDING: Final = "pending"
PAID: Final = "paid"
PARTIALLY_REFUNDED: Final = "partially_refunded"
REFUNDED: Final = "refunded"
DISPUTED: Final = "disputed"
FAILED: Final = "failed"
EXPIRED: Final = "expired"
CANCELED: Final = "canceled"

ALLOWED: Final[dict[str, frozenset[str]]] = {
    PENDING: frozenset({PAID, FAILED, EXPIRED, CANCELED}),
    FAILED: frozenset({PAID, EXPIRED, CANCELED}),
    EXPIRED: frozenset({PAID}),
    CANCELED: frozenset({PAID}),
    PAID: frozenset({PARTIALLY_REFUNDED, REFUNDED, DISPUTED}),
    PARTIALLY_REFUNDED: frozenset({REFUNDED, DISPUTED}),
    DISPUTED: frozenset({REFUNDED}),
    REFUNDED: frozenset(),
}

# States in which money has been received (refunds and disputes apply only there).
SETTLED: Final = frozenset({PAID, PARTIALLY_REFUNDED, REFUNDED, DISPUTED})
# States whose stock reservations are released.
RELEASING: Final = frozenset({FAILED, EXPIRED, CANCELED})


def can_move(current: str, target: str) -> bool:
    return target in ALLOWED[current]


def sources(target: str) -> frozenset[str]:
    """Every status from which an order may move to `target`."""
    return _SOURCES[target]


_SOURCES: Final = {
    target: frozenset(current for current, targets in ALLOWED.items() if target in targets) for target in ALLOWED
}


def status_after_refund(current: str, amount_total: int, amount_refunded: int) -> str:
    """The status a settled order takes for a refunded amount (a dispute stays a dispute until fully refunded)."""
    if amount_total > 0 and amount_refunded >= amount_total:
        return REFUNDED
    if current == DISPUTED:
        return DISPUTED
    if amount_refunded > 0:
        return PARTIALLY_REFUNDED
    return current
