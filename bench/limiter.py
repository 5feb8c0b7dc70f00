"""Benchmark of the in-process rate-limit store: checks per second on one thread, memory for 1M client keys.

    python bench/limiter.py [--checks 1000000] [--repeat 3] [--keys 1000000]

Rates are the best of `--repeat` runs (the least disturbed by other processes on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ratelimit.limiter import RateLimiter
from gateway.ratelimit.memory import MemoryStore
from gateway.ratelimit.policies import Policy

WEBHOOK = Policy("webhook", capacity=100, refill_per_minute=100)


def client_key(i: int) -> str:
    return f"webhook:ip:10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def checks_per_second(checks: int, distinct: int) -> float:
    store = MemoryStore(max(distinct, 1))
    keys = [client_key(i) for i in range(distinct)]
    take = store.take_now
    rounds, rest = divmod(checks, distinct)
    started = time.perf_counter()
    for _ in range(rounds):
        for key in keys:
            take(key, WEBHOOK)
    for key in keys[:rest]:
        take(key, WEBHOOK)
    return checks / (time.perf_counter() - started)


async def limiter_checks_per_second(checks: int, distinct: int) -> float:
    """The path a request takes: RateLimiter.check (key prefixing, the awaited store call)."""
    limiter = RateLimiter(MemoryStore(distinct), {"webhook": WEBHOOK}, fail_open=True)
    clients = [f"ip:10.0.{(i >> 8) & 255}.{i & 255}" for i in range(distinct)]
    check = limiter.check
    rounds = checks // distinct
    started = time.perf_counter()
    for _ in range(rounds):
        for client in clients:
            await check(WEBHOOK, client)
    return rounds * distinct / (time.perf_counter() - started)


def fill(store: MemoryStore, count: int) -> None:
    for i in range(count):
        store.take_now(client_key(i), WEBHOOK)


def frozen_clock() -> float:
    return 0.0  # no bucket refills while filling: all `count` keys stay (none is full again, none forgotten)


def memory_for(count: int) -> tuple[int, int]:
    """(RSS growth, tracemalloc bytes) of a store holding `count` distinct keys."""
    gc.collect()
    rss_before = rss_bytes()
    store = MemoryStore(count, clock=frozen_clock)
    fill(store, count)
    assert len(store) == count
    rss_growth = rss_bytes() - rss_before
    del store
    gc.collect()

    tracemalloc.start()
    store = MemoryStore(count, clock=frozen_clock)
    fill(store, count)
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return rss_growth, traced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, one thread, best of {args.repeat}")
    for distinct in (1_000, 100_000):
        rate = max(checks_per_second(args.checks, distinct) for _ in range(args.repeat))
        print(f"MemoryStore.take_now,    {distinct:>7,} hot keys: {rate:>12,.0f} checks/s")
    rate = max(asyncio.run(limiter_checks_per_second(args.checks, 10_000)) for _ in range(args.repeat))
    print(f"await RateLimiter.check,  {10_000:>7,} hot keys: {rate:>12,.0f} checks/s")

    rss_growth, traced = memory_for(args.keys)
    print(
        f"{args.keys:,} distinct keys held: RSS +{rss_growth / 2**20:,.1f} MiB, "
        f"tracemalloc {traced / 2**20:,.1f} MiB ({traced / args.keys:,.0f} bytes/key, key strings included)"
    )


if __name__ == "__main__":
    main()
