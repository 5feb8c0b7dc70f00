"""The price -> plan mapping (`PLANS_FILE`, `config/plans.yaml` by default), validated at boot.

An unknown price maps to plan `unknown` with a warning and the metric `subscription_unknown_price_total`. The
mapping of the process is installed once at boot (`install`); code that runs without the app (CLI replays,
tests driving the ledger directly) gets the file named by the `PLANS_FILE` environment variable, loaded
lazily.

"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway import metrics

log = logging.getLogger("gateway.subscriptions")

UNKNOWN_PLAN = "unknown"
DEFAULT_PLANS_FILE = "config/plans.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]
_PLAN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PRICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class PlansFileError(Exception):
    """The mapping file is missing or invalid; `problems` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid plans file: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PlanMap:
    prices: Mapping[str, str]
    source: str = ""

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
    unknown_keys = set(document) - {"version", "prices"}
    if unknown_keys:
        problems.append(f"unknown keys: {sorted(map(str, unknown_keys))}")
    if problems:
        raise PlansFileError(problems)
    return PlanMap(mapping, source)


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
