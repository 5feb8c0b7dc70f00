"""Token-bucket rate limiting: named policies (`policies`), two stores behind one interface (`memory`,
`redis_store`) and the `RateLimiter` the middleware asks (`limiter`)."""

from __future__ import annotations

from typing import Protocol

from gateway.ratelimit.policies import Decision, Policy


class StoreUnavailable(Exception):
    """The store could not answer. `fresh` is False while an earlier failure cools down (Redis not called)."""

    def __init__(self, reason: str, *, fresh: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fresh = fresh


class Store(Protocol):
    """Where buckets live. `take` spends one token of bucket `key` (already prefixed with the policy name)."""

    name: str

    async def take(self, key: str, policy: Policy) -> Decision: ...

    async def close(self) -> None: ...


__all__ = ["Decision", "Policy", "Store", "StoreUnavailable"]
