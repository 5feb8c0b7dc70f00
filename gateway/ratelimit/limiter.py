"""The rate limiter the middleware asks: policies by name, one store, and what to do when the store fails."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from gateway import keys, metrics
from gateway.errors import ServiceUnavailable
from gateway.ratelimit import Store, StoreUnavailable
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.policies import Decision, Policy, default_policies
from gateway.ratelimit.redis_store import RedisStore
from gateway.routing import declared_options
from gateway.settings import Settings

log = logging.getLogger("gateway.ratelimit")

STORE_UNAVAILABLE_RETRY_AFTER = 1


class RateLimiter:
    def __init__(self, store: Store, policies: Mapping[str, Policy], *, fail_open: bool) -> None:
        self.store = store
        self.policies = dict(policies)
        self.fail_open = fail_open

    @property
    def store(self) -> Store:
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store
        # The in-process store answers without awaiting: skip one coroutine per request.
        self._take_now = store.take_now if isinstance(store, MemoryStore) else None

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        store: Store
        if settings.rate_limit_store == "redis":
            if not settings.redis_url:  # load_settings refuses this already; kept for hand-built Settings
                raise ValueError("RATE_LIMIT_STORE=redis needs REDIS_URL")
            store = RedisStore.from_url(settings.redis_url)
        else:
            store = MemoryStore(settings.rate_limit_max_keys)
        return cls(store, default_policies(settings), fail_open=settings.rate_limit_fail_open)

    def policy(self, name: str) -> Policy:
        try:
            return self.policies[name]
        except KeyError:
            raise LookupError(f"unknown rate-limit policy {name!r}") from None

    async def check(self, policy: Policy, client: str) -> Decision | None:
        """Spend one token of `client`'s bucket for `policy`.

        None means the store failed and RATE_LIMIT_FAIL_OPEN let the request through; with fail-closed a
        store failure raises ServiceUnavailable (503 + Retry-After).
        """
        key = f"{policy.name}:{client}"
        if self._take_now is not None:
            return self._take_now(key, policy)
        try:
            return await self._store.take(key, policy)
        except StoreUnavailable as exc:
            decision = "allowed" if self.fail_open else "rejected"
            metrics.RATE_LIMIT_STORE_ERRORS.labels(self._store.name, decision).inc()
            if exc.fresh:  # once per failure, not once per request during the cooldown
                log.error(
                    "Rate limit store unavailable, failing " + ("open" if self.fail_open else "closed"),
                    extra={"code": "rate_limit_store_unavailable", "reason": exc.reason},
                )
            if self.fail_open:
                return None
            raise ServiceUnavailable(
                "Rate limiting is unavailable, retry later",
                code="rate_limit_unavailable",
                headers={"Retry-After": str(STORE_UNAVAILABLE_RETRY_AFTER)},
            ) from exc

    async def close(self) -> None:
        await self._store.close()


def check_routes(app: web.Application, limiter: RateLimiter) -> None:
    """A route naming a policy that does not exist is a boot error, not a 500 on its first request."""
    unknown = sorted(
        {
            options.rate_limit
            for route in app.router.routes()
            if (options := declared_options(route.handler)) is not None
            and options.rate_limit is not None
            and options.rate_limit not in limiter.policies
        }
    )
    if unknown:
        raise LookupError(f"routes use unknown rate-limit policies: {', '.join(unknown)}")


async def rate_limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: build the limiter from the settings, publish it as keys.RATE_LIMITER, close its store."""
    limiter = RateLimiter.from_settings(app[keys.SETTINGS])
    try:
        check_routes(app, limiter)
        app[keys.RATE_LIMITER] = limiter
        yield
    finally:
        await limiter.close()
