"""Boot checks of the bridge area: the schema registry and the plans file must be valid, or the gateway does
not start (every problem reported at once, like the settings)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys
from gateway.bridge import registry
from gateway.settings import ConfigError
from gateway.subscriptions import plans

log = logging.getLogger("gateway.bridge")


def check(plans_file: str) -> plans.PlanMap:
    """Parse the registry and the plans file; raise ConfigError listing every problem."""
    problems: list[str] = []
    try:
        registry.registry()
    except registry.RegistryFileError as exc:
        problems.append(f"bridge schema registry: {exc}")
    plan_map: plans.PlanMap | None = None
    try:
        plan_map = plans.load_plans(plans_file)
    except plans.PlansFileError as exc:
        problems.extend(f"PLANS_FILE: {problem}" for problem in exc.problems)
    if problems or plan_map is None:
        raise ConfigError(problems)
    return plan_map


async def bridge_ctx(app: web.Application) -> AsyncIterator[None]:
    plan_map = check(app[keys.SETTINGS].plans_file)
    plans.install(plan_map)
    log.info("plans loaded", extra={"reason": f"{len(plan_map.prices)} prices"})
    yield
