"""The in-process store: one float per client key in an LRU dictionary, bounded in size.

Memory stays bounded two ways: every new key first forgets up to two least recently used buckets that are full
again (a full bucket is the same as no bucket), and the store never holds more than `max_keys` keys (the least
recently used one is evicted; its client merely gets a full bucket back).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.ratelimit.policies import EPSILON, Decision, Policy

Clock = Callable[[], float]

_EXPIRED_DROPPED_PER_INSERT = 2
_new_decision = tuple.__new__  # builds the NamedTuple without the Python-level __new__


class MemoryStore:
    name = "memory"

    def __init__(self, max_keys: int, *, clock: Clock = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, float] = OrderedDict()  # key -> TAT, least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take_now(self, key: str, policy: Policy) -> Decision:
        """The synchronous check; nothing awaits in between, so concurrent requests cannot interleave.

        GCRA (see `policies`); the Redis store's Lua script is the same computation, keep the two in step.
        """
        buckets = self._buckets
        now = self._clock()
        interval = policy.interval
        burst = policy.burst  # GCRA: a request fits when it leaves the bucket's TAT at most `burst` ahead
        tat = buckets.get(key)
        if tat is None:
            self._make_room(now)
            tat = now
        else:
            buckets.move_to_end(key)
            if tat < now:
                tat = now
        allowed = tat + interval - now <= burst + EPSILON
        if allowed:
            tat += interval
        buckets[key] = tat
        return _new_decision(Decision, (allowed, tat - now, policy))

    async def take(self, key: str, policy: Policy) -> Decision:
        return self.take_now(key, policy)

    def sweep(self) -> int:
        """Forget the least recently used buckets that are full again, up to the first one that is not."""
        now = self._clock()
        buckets = self._buckets
        dropped = 0
        while buckets:
            key, tat = next(iter(buckets.items()))
            if tat > now:
                break
            del buckets[key]
            dropped += 1
        return dropped

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(_EXPIRED_DROPPED_PER_INSERT):
            if not buckets:
                return
            key, tat = next(iter(buckets.items()))
            if tat > now:
                break
            del buckets[key]
        while len(buckets) >= self._max_keys:
            buckets.popitem(last=False)

    async def close(self) -> None:
        self._buckets.clear()
