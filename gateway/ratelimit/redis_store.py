"""The shared store: buckets in Redis, so every replica spends from the same bucket.

One Lua script does the whole check atomically with the Redis server's clock (so replicas whose clocks differ
still agree about a bucket), and each key expires when its bucket is full again. Times are in
microseconds.

After a failure the store stops calling Redis for `cooldown` seconds: while Redis is down (or black-holed,
where each call would wait for the socket timeout) requests get the fail-open / fail-closed answer at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.ratelimit import StoreUnavailable
from gateway.ratelimit.policies import Decision, Policy

KEY_PREFIX = "gateway:ratelimit:"
SOCKET_TIMEOUT_SECONDS = 0.25
DEFAULT_COOLDOWN_SECONDS = 1.0

# KEYS[1] bucket; ARGV[1] interval (us per token), ARGV[2] burst (us to fill an empty bucket).
# Returns {allowed 0/1, us until the bucket is full again}; the same computation as MemoryStore.take_now.
TAKE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local allowed = 0
if tat + interval - now <= burst then
  allowed = 1
  tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return {allowed, tat - now}
"""


def connect(url: str) -> aioredis.Redis:
    """A client that fails fast: a rate-limit check must not hold a request for long when Redis is away."""
    return aioredis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),  # one immediate retry covers a pooled connection the server closed
    )


class RedisStore:
    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = KEY_PREFIX,
        cooldown: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._prefix = prefix
        self._cooldown = cooldown
        self._clock = clock
        self._down_until = float("-inf")

    @classmethod
    def from_url(cls, url: str, *, cooldown: float = DEFAULT_COOLDOWN_SECONDS) -> RedisStore:
        return cls(connect(url), cooldown=cooldown)

    def key(self, key: str) -> str:
        return self._prefix + key

    async def take(self, key: str, policy: Policy) -> Decision:
        if self._clock() < self._down_until:
            raise StoreUnavailable("recent failure", fresh=False)
        interval = round(policy.interval * 1_000_000)
        try:
            reply = await self._script(keys=[self._prefix + key], args=[interval, interval * policy.capacity])
        except (RedisError, OSError) as exc:
            self._down_until = self._clock() + self._cooldown
            raise StoreUnavailable(type(exc).__name__) from exc
        allowed, reset_after = reply
        return Decision(allowed == 1, int(reset_after) / 1_000_000, policy)

    async def close(self) -> None:
        await self._client.aclose()
