"""The shared Redis store: the in-process store's buckets, atomic, shared by every replica, expiring.

Refill is tested by moving a bucket's stored time back (what the passing of time does), never by sleeping.
Tests against an unreachable Redis need no server and run everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import REGISTRY

from gateway import keys
from gateway.errors import ServiceUnavailable
from gateway.ratelimit.limiter import RateLimiter, rate_limiter_ctx
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.policies import Policy
from gateway.ratelimit.redis_store import KEY_PREFIX, RedisStore, connect
from gateway.settings import Settings

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
FIVE_PER_MINUTE = Policy("test", capacity=5, refill_per_minute=5)  # one token every 12 s


def store_errors(decision: str) -> float:
    labels = {"store": "redis", "decision": decision}
    return REGISTRY.get_sample_value("rate_limit_store_errors_total", labels) or 0.0


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url)
    yield store
    await store.close()


async def rewind(client: aioredis.Redis, key: str, seconds: float) -> None:
    """Move a bucket `seconds` into the past: the tokens those seconds would have refilled come back."""
    stored = await client.get(KEY_PREFIX + key)
    assert isinstance(stored, bytes)
    tat = int(stored)
    ttl = await client.pttl(KEY_PREFIX + key)
    await client.set(KEY_PREFIX + key, str(tat - int(seconds * 1_000_000)), px=ttl)


@pytest.mark.redis
async def test_a_full_bucket_allows_capacity_requests_then_refuses(store: RedisStore) -> None:
    decisions = [await store.take("test:ip:192.0.2.1", FIVE_PER_MINUTE) for _ in range(7)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    refused = decisions[5]
    assert 2 < refused.retry_after <= 12  # the next token comes 12 s after the burst began
    assert 50 < refused.reset_after <= 60


@pytest.mark.redis
async def test_the_same_sequence_gives_the_same_answers_as_the_memory_store(store: RedisStore) -> None:
    memory = MemoryStore(100)
    policy = Policy("test", capacity=3, refill_per_minute=1)  # nothing refills during the test
    from_redis = [await store.take("k", policy) for _ in range(5)]
    from_memory = [await memory.take("k", policy) for _ in range(5)]
    answers = [[(d.allowed, d.remaining) for d in run] for run in (from_redis, from_memory)]
    assert answers[0] == answers[1] == [(True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]


@pytest.mark.redis
async def test_tokens_come_back_at_the_refill_rate(store: RedisStore, redis_client: aioredis.Redis) -> None:
    key = "test:ip:192.0.2.1"
    for _ in range(5):
        await store.take(key, FIVE_PER_MINUTE)
    assert not (await store.take(key, FIVE_PER_MINUTE)).allowed

    await rewind(redis_client, key, 12)  # twelve seconds: one token
    assert (await store.take(key, FIVE_PER_MINUTE)).allowed
    assert not (await store.take(key, FIVE_PER_MINUTE)).allowed

    await rewind(redis_client, key, 3600)  # an hour: full, never more than the capacity
    assert [(await store.take(key, FIVE_PER_MINUTE)).allowed for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.redis
async def test_buckets_expire_when_full_again(store: RedisStore, redis_client: aioredis.Redis) -> None:
    await store.take("test:ip:192.0.2.1", FIVE_PER_MINUTE)  # full again in 12 s
    assert 0 < await redis_client.pttl(KEY_PREFIX + "test:ip:192.0.2.1") <= 12_001
    for _ in range(4):
        await store.take("test:ip:192.0.2.1", FIVE_PER_MINUTE)  # empty: full again in 60 s
    assert 12_001 < await redis_client.pttl(KEY_PREFIX + "test:ip:192.0.2.1") <= 60_001


@pytest.mark.redis
async def test_concurrent_requests_never_overspend(store: RedisStore) -> None:
    policy = Policy("test", capacity=10, refill_per_minute=1)
    decisions = await asyncio.gather(*(store.take("test:ip:192.0.2.1", policy) for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 10


@pytest.mark.redis
async def test_two_gateway_instances_share_buckets(redis_url: str) -> None:
    policy = Policy("webhook", capacity=10, refill_per_minute=1)
    first = RateLimiter(RedisStore.from_url(redis_url), {"webhook": policy}, fail_open=False)
    second = RateLimiter(RedisStore.from_url(redis_url), {"webhook": policy}, fail_open=False)
    try:
        answers = await asyncio.gather(
            *(limiter.check(policy, "ip:192.0.2.1") for _ in range(15) for limiter in (first, second))
        )
        assert sum(1 for d in answers if d is not None and d.allowed) == 10
        other_client = await second.check(policy, "ip:192.0.2.2")
        assert other_client is not None and other_client.allowed
    finally:
        await first.close()
        await second.close()


@pytest.mark.redis
async def test_the_cleanup_context_builds_a_redis_limiter_and_closes_it(
    redis_url: str, settings_factory: Callable[..., Settings]
) -> None:
    app = web.Application()
    app[keys.SETTINGS] = settings_factory(RATE_LIMIT_STORE="redis", REDIS_URL=redis_url, RATE_LIMIT_WEBHOOK_MAX=2)
    context = rate_limiter_ctx(app)
    await anext(context)
    limiter = app[keys.RATE_LIMITER]
    assert isinstance(limiter.store, RedisStore)
    webhook = limiter.policy("webhook")
    answers = [await limiter.check(webhook, "ip:192.0.2.1") for _ in range(3)]
    assert [d is not None and d.allowed for d in answers] == [True, True, False]
    with pytest.raises(StopAsyncIteration):
        await anext(context)


async def test_an_unreachable_redis_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(RedisStore.from_url(UNREACHABLE_REDIS), {"test": FIVE_PER_MINUTE}, fail_open=True)
    before = store_errors("allowed")
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.ratelimit"):
            answers = [await limiter.check(FIVE_PER_MINUTE, "ip:192.0.2.1") for _ in range(3)]
    finally:
        await limiter.close()
    assert answers == [None, None, None]  # let through, unlimited
    assert store_errors("allowed") == before + 3
    # Logged once: the next requests within the cooldown do not call Redis again.
    assert [r.getMessage() for r in caplog.records] == ["Rate limit store unavailable, failing open"]


async def test_an_unreachable_redis_fails_closed() -> None:
    limiter = RateLimiter(RedisStore.from_url(UNREACHABLE_REDIS), {"test": FIVE_PER_MINUTE}, fail_open=False)
    before = store_errors("rejected")
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await limiter.check(FIVE_PER_MINUTE, "ip:192.0.2.1")
    finally:
        await limiter.close()
    assert refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "1"
    assert store_errors("rejected") == before + 1


async def test_redis_is_tried_again_after_the_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    store = RedisStore(connect(UNREACHABLE_REDIS), cooldown=1.0, clock=lambda: now[0])
    limiter = RateLimiter(store, {"test": FIVE_PER_MINUTE}, fail_open=True)
    failures_logged = []
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.ratelimit"):
            for now[0] in (0.0, 0.5, 0.99, 1.0, 1.5, 2.5):
                await limiter.check(FIVE_PER_MINUTE, "ip:192.0.2.1")
                failures_logged.append(len(caplog.records))
    finally:
        await limiter.close()
    assert failures_logged == [1, 1, 1, 2, 2, 3]  # each logged failure is one real call to Redis
