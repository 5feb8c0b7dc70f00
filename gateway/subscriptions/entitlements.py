"""Entitlements: is a user premium right now, from the subscriptions table (the converged Stripe state).

Policy
- premium statuses: `active`, `trialing`, and `past_due` (grace while Stripe retries the payment: Stripe moves
  the subscription to `unpaid` or `canceled` when its retries are exhausted, which ends premium);
- a subscription cancelled at period end stays premium until `current_period_end` (then Stripe sends
  `customer.subscription.deleted`); if that event is late, premium still ends at `current_period_end`;
- `pending` (checkout completed, Stripe's subscription events not applied yet), `incomplete`, `unpaid`,
  `paused`, `canceled`, `incomplete_expired`: not premium.
With several subscriptions the best one is reported: premium first, then the status order above, then the
latest period end.

"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

PREMIUM_STATUSES = ("active", "trialing", "past_due")

USER_SUBSCRIPTIONS = """
SELECT stripe_subscription_id, plan_id, status, current_period_end, cancel_at_period_end, updated_at,
       latest_invoice_hosted_url, latest_invoice_pdf
FROM subscriptions
WHERE user_id = $1
"""


@dataclass(frozen=True, slots=True)
class Entitlements:
    premium: bool
    plan_id: str | None
    status: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool = False
    subscription_id: str | None = None
    latest_invoice_url: str | None = None  # the latest invoice's hosted page (invoice.* webhooks)
    latest_invoice_pdf: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "premium": self.premium,
            "plan_id": self.plan_id,
            "status": self.status,
            "current_period_end": self.current_period_end.isoformat() if self.current_period_end else None,
            "cancel_at_period_end": self.cancel_at_period_end,
            "subscription_id": self.subscription_id,
            "latest_invoice_url": self.latest_invoice_url,
            "latest_invoice_pdf": self.latest_invoice_pdf,
        }


NONE = Entitlements(False, None, None, None)


def is_premium(status: str, period_end: datetime | None, cancel_at_period_end: bool, now: datetime) -> bool:
    if status not in PREMIUM_STATUSES:
        return False
    return not (cancel_at_period_end and period_end is not None and period_end <= now)


def decide(rows: list[dict[str, Any]], now: datetime | None = None) -> Entitlements:
    now = now or datetime.now(UTC)
    if not rows:
        return NONE
    epoch = datetime.min.replace(tzinfo=UTC)

    def rank(row: dict[str, Any]) -> tuple[bool, int, datetime, datetime]:
        premium = is_premium(row["status"], row["current_period_end"], row["cancel_at_period_end"], now)
        order = PREMIUM_STATUSES.index(row["status"]) if row["status"] in PREMIUM_STATUSES else len(PREMIUM_STATUSES)
        return (premium, -order, row["current_period_end"] or epoch, row["updated_at"] or epoch)

    best = max(rows, key=rank)
    return Entitlements(
        premium=is_premium(best["status"], best["current_period_end"], best["cancel_at_period_end"], now),
        plan_id=best["plan_id"],
        status=best["status"],
        current_period_end=best["current_period_end"],
        cancel_at_period_end=best["cancel_at_period_end"],
        subscription_id=best["stripe_subscription_id"],
        latest_invoice_url=best.get("latest_invoice_hosted_url"),
        latest_invoice_pdf=best.get("latest_invoice_pdf"),
    )


async def for_user(con: asyncpg.Connection, user_id: str, now: datetime | None = None) -> Entitlements:
    rows = await con.fetch(USER_SUBSCRIPTIONS, user_id)
    return decide([dict(r) for r in rows], now)
