"""The price -> plan mapping (`PLANS_FILE`, `config/plans.yaml` by default), validated at boot.

An unknown price maps to plan `unknown` with a warning and the metric `subscription_unknown_price_total`.

The optional `plans:` section lists the plans the gateway's own subscription checkout sells
(`POST /v1/checkout/sessions` with `mode: subscription`): for each plan its default price (one of `prices:` that
maps to it), the trial a checkout gets when the request names none (`trial_days`) and the longest trial a request
may ask for (`max_trial_days`; 0: requests may not choose). A plan missing there cannot be bought from the gateway.

The
mapping of the process is installed once at boot (`install`); code that runs without the app (CLI replays,
tests driving the ledger directly) gets the file named by the `PLANS_FILE` environment variable, loaded
lazily.

"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gateway import metrics

log = logging.getLogger("gateway.subscriptions")

UNKNOWN_PLAN = "unknown"
DEFAULT_PLANS_FILE = "config/plans.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]
_PLAN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PRICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# Stripe's bound for `subscription_data.trial_period_days`.
MAX_TRIAL_DAYS = 730


class PlansFileError(Exception):
    """The mapping file is missing or invalid; `problems` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid plans file: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SellablePlan:
    """A plan the subscription checkout sells (the `plans:` section)."""

    plan_id: str
    default_price: str
    trial_days: int = 0
    max_trial_days: int = 0


@dataclass(frozen=True, slots=True)
class PlanMap:
    prices: Mapping[str, str]
    source: str = ""
    sellable: Mapping[str, SellablePlan] = field(default_factory=dict)

    def plan_for(self, price_id: str | None) -> str:
        if price_id is not None:
            plan = self.prices.get(price_id)
            if plan is not None:
                return plan
        metrics.SUBSCRIPTION_UNKNOWN_PRICES.inc()
        log.warning("subscription price missing from the plans file", extra={"reason": f"price {price_id}"})
        return UNKNOWN_PLAN

    @property
    def plan_ids(self) -> frozenset[str]:
        return frozenset(self.prices.values())

    def prices_of(self, plan_id: str) -> frozenset[str]:
        return frozenset(price for price, plan in self.prices.items() if plan == plan_id)


def resolve_path(path: str) -> Path:
    """An absolute path as is; a relative one against the working directory, then the repository root."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return REPO_ROOT / candidate


def parse_plans(document: object, source: str = "") -> PlanMap:
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise PlansFileError([f"{source}: must be a YAML mapping with `version` and `prices`"])
    if document.get("version") != 1:
        problems.append("version: must be 1")
    prices = document.get("prices")
    if not isinstance(prices, Mapping) or not prices:
        problems.append("prices: must be a non-empty mapping price_id -> plan_id")
        raise PlansFileError(problems)
    mapping: dict[str, str] = {}
    for price, plan in prices.items():
        if not isinstance(price, str) or not _PRICE_ID_RE.match(price):
            problems.append(f"prices: {price!r} is not a Stripe price id")
            continue
        if not isinstance(plan, str) or not _PLAN_ID_RE.match(plan):
            problems.append(f"prices.{price}: plan id {plan!r} must match [a-z0-9][a-z0-9_-]*")
            continue
        if plan == UNKNOWN_PLAN:
            problems.append(f"prices.{price}: `{UNKNOWN_PLAN}` is reserved for unmapped prices")
            continue
        mapping[price] = plan
    unknown_keys = set(document) - {"version", "prices", "plans"}
    if unknown_keys:
        problems.append(f"unknown keys: {sorted(map(str, unknown_keys))}")
    sellable = _parse_sellable(document.get("plans"), mapping, problems)
    if problems:
        raise PlansFileError(problems)
    return PlanMap(mapping, source, sellable)


def _bounded_days(entry: Mapping[object, object], key: str, where: str, problems: list[str]) -> int:
    value = entry.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TRIAL_DAYS:
        problems.append(f"{where}.{key}: must be an integer from 0 to {MAX_TRIAL_DAYS}")
        return 0
    return value


def _parse_sellable(raw: object, prices: Mapping[str, str], problems: list[str]) -> dict[str, SellablePlan]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append("plans: must be a mapping plan_id -> {default_price, trial_days, max_trial_days}")
        return {}
    sellable: dict[str, SellablePlan] = {}
    for plan, entry in raw.items():
        where = f"plans.{plan}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        unknown = set(entry) - {"default_price", "trial_days", "max_trial_days"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(map(str, unknown))}")
        price = entry.get("default_price")
        if not isinstance(price, str) or prices.get(price) != plan:
            problems.append(f"{where}.default_price: must be a price of `prices:` that maps to {plan}")
            continue
        trial = _bounded_days(entry, "trial_days", where, problems)
        most = _bounded_days(entry, "max_trial_days", where, problems)
        if trial > most and "max_trial_days" in entry:
            problems.append(f"{where}.trial_days: must not exceed max_trial_days")
        sellable[str(plan)] = SellablePlan(str(plan), price, trial, max(most, trial))
    return sellable


def load_plans(path: str) -> PlanMap:
    resolved = resolve_path(path)
    try:
        document = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlansFileError([f"PLANS_FILE {path}: cannot be read ({type(exc).__name__})"]) from exc
    except yaml.YAMLError as exc:
        raise PlansFileError([f"PLANS_FILE {path}: not valid YAML ({exc})"]) from exc
    return parse_plans(document, str(resolved))


_current: PlanMap | None = None


def install(plan_map: PlanMap | None) -> None:
    """Make `plan_map` the mapping of this process (None: forget it, the next use reloads from the env)."""
    global _current
    _current = plan_map


def current() -> PlanMap:
    global _current
    if _current is None:
        _current = load_plans(os.environ.get("PLANS_FILE", DEFAULT_PLANS_FILE))
    return _current
