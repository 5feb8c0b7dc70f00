"""What a webhook handler receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from gateway.unit_of_work import UnitOfWork
from gateway.webhooks.envelope import StripeEvent

# `waiting`: the event names its order only by Stripe ids no order knows yet; the ledger keeps it and applies it
# when an order learns one of them.
Status = Literal["processed", "ignored", "stale", "waiting"]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str | None = None
    order_id: str | None = None
    # The order was created or learnt a Stripe id by which kept events may name it.
    learned_ids: bool = False


Handler = Callable[[UnitOfWork, StripeEvent], Awaitable[Outcome]]
