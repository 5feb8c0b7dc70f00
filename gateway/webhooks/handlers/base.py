"""What a webhook handler receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from gateway.unit_of_work import UnitOfWork
from gateway.webhooks.envelope import StripeEvent

Status = Literal["processed", "ignored", "stale"]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str | None = None
    order_id: str | None = None


Handler = Callable[[UnitOfWork, StripeEvent], Awaitable[Outcome]]
