"""Request bodies of the billing routes, checked strictly (exact types, no unknown fields, all problems at once),
with the helpers of gateway/checkout/validation.py. The client never sends a price amount: it names a plan of the
plans file (and optionally another of that plan's prices)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.checkout.validation import Problems, is_int, redirect_origins, redirect_url, refuse_unknown
from gateway.settings import Settings
from gateway.subscriptions.plans import PlanMap, SellablePlan

MAX_REFUND_AMOUNT = 99_999_999  # Stripe's largest amount (8 digits)
REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")


def _fingerprint(value: object) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _plan_and_price(body: Mapping[str, Any], plan_map: PlanMap, problems: Problems) -> tuple[SellablePlan | None, str]:
    """`plan_id` (a plan the plans file sells) and `price_id` (one of that plan's prices; default its
    default_price)."""
    plan_id = body.get("plan_id")
    plan = plan_map.sellable.get(plan_id) if isinstance(plan_id, str) else None
    if plan is None:
        problems.add("plan_id", f"required, one of: {', '.join(sorted(plan_map.sellable)) or 'none configured'}")
    price_id = plan.default_price if plan else ""
    if "price_id" in body:
        raw = body["price_id"]
        if not isinstance(raw, str) or (plan is not None and raw not in plan_map.prices_of(plan.plan_id)):
            problems.add("price_id", "must be a price of the plan (plans file)")
        else:
            price_id = raw
    return plan, price_id


# ------------------------------------------------------------------ subscription checkout


@dataclass(frozen=True, slots=True)
class SubscriptionCheckoutRequest:
    plan: SellablePlan
    price_id: str
    trial_days: int
    success_url: str
    cancel_url: str

    def fingerprint(self) -> str:
        return _fingerprint([self.plan.plan_id, self.price_id, self.trial_days, self.success_url, self.cancel_url])


_SUBSCRIPTION_FIELDS = frozenset({"mode", "plan_id", "price_id", "trial_days", "success_url", "cancel_url"})


def parse_subscription_checkout(
    body: Mapping[str, Any], settings: Settings, plan_map: PlanMap
) -> SubscriptionCheckoutRequest:
    problems = Problems()
    refuse_unknown(body, _SUBSCRIPTION_FIELDS, problems)
    plan, price_id = _plan_and_price(body, plan_map, problems)
    trial_days = plan.trial_days if plan else 0
    if "trial_days" in body:
        raw_trial = body["trial_days"]
        most = plan.max_trial_days if plan else 0
        if not is_int(raw_trial) or not 0 <= raw_trial <= most:
            problems.add("trial_days", f"an integer from 0 to {most} for this plan")
        else:
            trial_days = raw_trial
    allowed = redirect_origins(settings)
    success_url = redirect_url(body, "success_url", settings.checkout_success_url, allowed, problems)
    cancel_url = redirect_url(body, "cancel_url", settings.checkout_cancel_url, allowed, problems)
    problems.raise_if_any()
    assert plan is not None  # a missing plan is a problem raised above
    return SubscriptionCheckoutRequest(plan, price_id, trial_days, success_url, cancel_url)


# ------------------------------------------------------------------ plan changes


def parse_plan_change(body: Mapping[str, Any], plan_map: PlanMap) -> tuple[str, str]:
    """`{plan_id, price_id?}` -> (plan id, price id): the plan's default price unless another of its prices is
    named."""
    problems = Problems()
    refuse_unknown(body, frozenset({"plan_id", "price_id"}), problems)
    plan, price_id = _plan_and_price(body, plan_map, problems)
    problems.raise_if_any()
    assert plan is not None
    return plan.plan_id, price_id


def parse_cancel(body: Mapping[str, Any]) -> bool:
    """`{at_period_end?: bool}` (default true) -> at_period_end."""
    problems = Problems()
    refuse_unknown(body, frozenset({"at_period_end"}), problems)
    at_period_end = body.get("at_period_end", True)
    if not isinstance(at_period_end, bool):
        problems.add("at_period_end", "must be true or false")
    problems.raise_if_any()
    return bool(at_period_end)


def parse_empty(body: Mapping[str, Any]) -> None:
    problems = Problems()
    refuse_unknown(body, frozenset(), problems)
    problems.raise_if_any()


# ------------------------------------------------------------------ customer portal


def parse_portal(body: Mapping[str, Any], settings: Settings) -> str:
    """`{return_url?}` -> the return URL: one of BILLING_PORTAL_RETURN_URLS exactly (default: the first)."""
    problems = Problems()
    refuse_unknown(body, frozenset({"return_url"}), problems)
    allowed = settings.billing_portal_return_urls
    url = body.get("return_url", allowed[0])
    if url not in allowed:
        problems.add("return_url", "must be one of the configured return URLs (BILLING_PORTAL_RETURN_URLS)")
    problems.raise_if_any()
    return str(url)


# ------------------------------------------------------------------ refunds


@dataclass(frozen=True, slots=True)
class RefundRequest:
    amount: int | None  # None: everything left to refund
    reason: str

    def fingerprint(self) -> str:
        return _fingerprint([self.amount, self.reason])


def parse_refund(body: Mapping[str, Any]) -> RefundRequest:
    problems = Problems()
    refuse_unknown(body, frozenset({"amount", "reason"}), problems)
    amount = body.get("amount")
    if amount is not None and (not is_int(amount) or not 1 <= amount <= MAX_REFUND_AMOUNT):
        problems.add("amount", f"a positive integer (smallest currency unit) up to {MAX_REFUND_AMOUNT}")
    reason = body.get("reason", "requested_by_customer")
    if reason not in REFUND_REASONS:
        problems.add("reason", f"one of {', '.join(REFUND_REASONS)}")
    problems.raise_if_any()
    return RefundRequest(amount if is_int(amount) else None, str(reason))
