"""The token bucket itself, on the in-process store with a hand-driven clock (no test waits for real time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.ratelimit.limiter import RateLimiter
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.policies import (
    Decision,
    Policy,
    default_policies,
    ratelimit_header,
    retry_after_seconds,
)
from gateway.settings import Settings

FIVE_PER_MINUTE = Policy("test", capacity=5, refill_per_minute=5)  # one token every 12 s


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def burst(store: MemoryStore, key: str, policy: Policy, count: int) -> list[Decision]:
    return [store.take_now(key, policy) for _ in range(count)]


def test_a_full_bucket_allows_capacity_requests_then_refuses(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    decisions = burst(store, "test:ip:192.0.2.1", FIVE_PER_MINUTE, 7)

    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert decisions[0].retry_after == 0
    assert decisions[4].retry_after == pytest.approx(12)  # empty: the next token in 12 s
    refused = decisions[5]
    assert refused.retry_after == pytest.approx(12)
    assert refused.reset_after == pytest.approx(60)  # five tokens to come back, one every 12 s
    assert retry_after_seconds(refused) == 12


def test_tokens_come_back_at_the_refill_rate(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    key = "test:ip:192.0.2.1"
    burst(store, key, FIVE_PER_MINUTE, 5)

    clock.advance(11.9)
    assert not store.take_now(key, FIVE_PER_MINUTE).allowed
    clock.advance(0.1)  # 12 s: one token
    assert store.take_now(key, FIVE_PER_MINUTE).allowed
    assert not store.take_now(key, FIVE_PER_MINUTE).allowed

    clock.advance(36)  # three tokens
    assert [d.allowed for d in burst(store, key, FIVE_PER_MINUTE, 4)] == [True, True, True, False]

    clock.advance(3600)  # an hour idle: full again, but never more than the capacity
    assert [d.allowed for d in burst(store, key, FIVE_PER_MINUTE, 6)] == [True] * 5 + [False]


def test_refused_requests_do_not_spend_tokens(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    key = "test:ip:192.0.2.1"
    burst(store, key, FIVE_PER_MINUTE, 50)  # 5 allowed, 45 refused
    clock.advance(12)
    assert store.take_now(key, FIVE_PER_MINUTE).allowed


def test_keys_have_separate_buckets(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    burst(store, "test:ip:192.0.2.1", FIVE_PER_MINUTE, 5)
    assert not store.take_now("test:ip:192.0.2.1", FIVE_PER_MINUTE).allowed
    assert store.take_now("test:ip:192.0.2.2", FIVE_PER_MINUTE).allowed


def test_the_store_never_holds_more_than_max_keys(clock: FakeClock) -> None:
    store = MemoryStore(3, clock=clock)
    for i in range(1000):
        store.take_now(f"test:ip:10.0.{i // 256}.{i % 256}", FIVE_PER_MINUTE)
        assert len(store) <= 3
    assert len(store) == 3


def test_eviction_drops_the_least_recently_used_key(clock: FakeClock) -> None:
    store = MemoryStore(3, clock=clock)
    for key in ("a", "b", "c"):
        burst(store, key, FIVE_PER_MINUTE, 5)
    store.take_now("a", FIVE_PER_MINUTE)  # "a" used again: "b" is now the oldest
    store.take_now("d", FIVE_PER_MINUTE)

    assert "b" not in store
    assert "a" in store and "c" in store and "d" in store
    assert not store.take_now("a", FIVE_PER_MINUTE).allowed  # kept, still empty
    assert store.take_now("b", FIVE_PER_MINUTE).allowed  # evicted: starts over with a full bucket


def test_idle_buckets_are_forgotten_once_full_again(clock: FakeClock) -> None:
    store = MemoryStore(1000, clock=clock)
    for i in range(10):
        store.take_now(f"old:{i}", FIVE_PER_MINUTE)  # one token spent: full again 12 s later
    clock.advance(12)
    for i in range(5):
        store.take_now(f"new:{i}", FIVE_PER_MINUTE)
    assert len(store) == 5  # each new key forgot up to two full buckets: all ten old ones are gone

    busy = "busy"
    burst(store, busy, FIVE_PER_MINUTE, 5)  # full again only after 60 s
    clock.advance(12)
    assert store.sweep() == 5  # the five new keys are full again; the busy one is the first that is not
    assert len(store) == 1 and busy in store
    clock.advance(48)
    assert store.sweep() == 1
    assert len(store) == 0


def test_forgetting_a_full_bucket_changes_no_answer(clock: FakeClock) -> None:
    kept = MemoryStore(1000, clock=clock)
    swept = MemoryStore(1000, clock=clock)
    key = "test:ip:192.0.2.1"
    for store in (kept, swept):
        burst(store, key, FIVE_PER_MINUTE, 3)
    clock.advance(60)
    swept.sweep()
    assert key in kept and key not in swept
    assert burst(kept, key, FIVE_PER_MINUTE, 6) == burst(swept, key, FIVE_PER_MINUTE, 6)


async def test_concurrent_requests_never_overspend(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    policy = Policy("test", capacity=10, refill_per_minute=10)
    decisions = await asyncio.gather(*(store.take("test:ip:192.0.2.1", policy) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


async def test_the_limiter_prefixes_keys_with_the_policy(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    one = Policy("one", capacity=1, refill_per_minute=1)
    two = Policy("two", capacity=1, refill_per_minute=1)
    limiter = RateLimiter(store, {"one": one, "two": two}, fail_open=True)

    first = await limiter.check(one, "ip:192.0.2.1")
    again = await limiter.check(one, "ip:192.0.2.1")
    other_policy = await limiter.check(two, "ip:192.0.2.1")

    assert first is not None and first.allowed
    assert again is not None and not again.allowed
    assert other_policy is not None and other_policy.allowed
    assert "one:ip:192.0.2.1" in store and "two:ip:192.0.2.1" in store
    with pytest.raises(LookupError):
        limiter.policy("nope")


def test_headers_follow_the_ietf_draft(clock: FakeClock) -> None:
    store = MemoryStore(100, clock=clock)
    policy = Policy("webhook", capacity=100, refill_per_minute=100)
    assert policy.policy_header() == '"webhook";q=100;w=60'

    first = store.take_now("k", policy)
    assert ratelimit_header(policy, first) == '"webhook";r=99;t=1'  # 0.6 s until full again, rounded up
    for _ in range(99):
        last = store.take_now("k", policy)
    assert ratelimit_header(policy, last) == '"webhook";r=0;t=1'  # empty: when the next unit comes back
    refused = store.take_now("k", policy)
    assert not refused.allowed
    assert ratelimit_header(policy, refused) == '"webhook";r=0;t=1'
    assert retry_after_seconds(refused) == 1  # 0.6 s, an integer of at least 1

    slow = Policy("slow", capacity=2, refill_per_minute=1)
    assert slow.policy_header() == '"slow";q=2;w=120'
    burst(store, "s", slow, 2)
    refused = store.take_now("s", slow)
    assert ratelimit_header(slow, refused) == '"slow";r=0;t=60'
    assert retry_after_seconds(refused) == 60


def test_default_policies_come_from_the_settings(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        RATE_LIMIT_WEBHOOK_MAX=100, RATE_LIMIT_PUBLIC_MAX=60, RATE_LIMIT_AUTH_MAX=7, RATE_LIMIT_CHECKOUT_MAX=3
    )
    policies = default_policies(settings)
    assert {name: (p.capacity, p.refill_per_minute, p.key_by) for name, p in policies.items()} == {
        "webhook": (100, 100, "ip"),
        "public": (60, 60, "ip"),
        "auth": (7, 7, "ip"),
        "checkout": (3, 3, "user"),
    }


def test_a_policy_needs_a_positive_capacity_and_refill() -> None:
    with pytest.raises(ValueError):
        Policy("bad", capacity=0, refill_per_minute=1)
    with pytest.raises(ValueError):
        Policy("bad", capacity=1, refill_per_minute=0)
