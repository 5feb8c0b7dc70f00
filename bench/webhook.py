"""Webhook throughput and latency: the real gateway against a bare reference server, same database.

    make bench-webhook        (or: TEST_DATABASE_URL=postgresql://... python bench/webhook.py)

The gateway runs as `python -m gateway serve` (every middleware on, WORKERS=1, LOG_LEVEL=WARNING).
The reference is a bare aiohttp app that checks the HMAC and runs a 3-statement transaction (insert
ledger, one business update chosen by the event type, insert outbox). Both get the same streams:

- payment: distinct signed `payment_intent.succeeded` events for pre-created pending orders (full work: ledger
  claim, order lock, transition, stock commit, payment row, audit, bridge, NOTIFY);
- mixed: about 40% payment intents and 20% checkout sessions paying pending orders, 15% refunds and 5% disputes
  of paid orders, 20% subscription renewals (invoice.paid + customer.subscription.updated);
- duplicate: the payment stream's events again.

Rounds are interleaved (gateway then reference, then reference then gateway, ...) and medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.db import migrate as migrations  # noqa: E402
from gateway.webhooks.signature import sign  # noqa: E402

SECRET = "whsec_bench_" + "b" * 24

# ---------------------------------------------------------------------------- reference server

REF_LEDGER = """
INSERT INTO webhook_events (stripe_event_id, type, livemode, stripe_created, status, attempts, payload)
VALUES ($1, $2, false, now(), 'processed', 1, $3::jsonb)
ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id
"""
REF_ORDER = "UPDATE orders SET status = 'paid', paid_at = now(), updated_at = now() WHERE id = $1::uuid"
REF_REFUND = """
UPDATE orders SET status = 'partially_refunded', amount_refunded = amount_refunded + $2, updated_at = now()
WHERE stripe_charge_id = $1
"""
REF_DISPUTE = "UPDATE orders SET status = 'disputed', updated_at = now() WHERE stripe_charge_id = $1"
REF_SUBSCRIPTION = """
INSERT INTO subscriptions (stripe_subscription_id, status) VALUES ($1, 'active')
ON CONFLICT (stripe_subscription_id) DO UPDATE SET status = 'active', updated_at = now()
"""
REF_OUTBOX = """
INSERT INTO bridge_events (event_type, app_source, payload, metadata, source_event_id)
VALUES ('ORDER_PAID', 'website', $1::jsonb, '{"version": "v1"}', $2)
"""


def run_reference(port: int, url: str) -> None:
    from aiohttp import web

    async def main() -> None:
        pool = await asyncpg.create_pool(url, min_size=4, max_size=20)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            header = request.headers.get("Stripe-Signature", "")
            parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
            expected = hmac.new(SECRET.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, parts.get("v1", "")):
                return web.json_response({"error": "signature"}, status=400)
            event = orjson.loads(body)
            obj, kind = event["data"]["object"], event["type"]
            async with pool.acquire() as con, con.transaction():
                ledger = await con.fetchval(REF_LEDGER, event["id"], kind, body.decode())
                if ledger is None:
                    return web.json_response({"status": "duplicate"})
                if kind == "refund.created":
                    await con.execute(REF_REFUND, obj["charge"], obj["amount"])
                elif kind == "charge.dispute.created":
                    await con.execute(REF_DISPUTE, obj["charge"])
                elif kind.startswith(("invoice.", "customer.subscription.")):
                    await con.execute(REF_SUBSCRIPTION, obj.get("subscription") or obj["id"])
                else:
                    await con.execute(REF_ORDER, obj["metadata"]["order_id"])
                await con.execute(REF_OUTBOX, orjson.dumps({"id": obj["id"]}).decode(), event["id"])
            return web.json_response({"status": "processed"})

        async def health(_request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_post("/stripe/webhook", handle)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


# ---------------------------------------------------------------------------- setup

SEED = """
WITH p AS (
    INSERT INTO products (sku, name, unit_amount, currency, stock_available)
    VALUES ($2, 'bench', 1000, 'eur', 100000000) RETURNING id
), o AS (
    INSERT INTO orders (id, user_id, amount_total, currency)
    SELECT id, 'bench-user', 1000, 'eur' FROM unnest($1::uuid[]) AS id RETURNING id
), i AS (
    INSERT INTO order_items (order_id, product_id, quantity, unit_amount, currency)
    SELECT o.id, p.id, 1, 1000, 'eur' FROM o, p
)
INSERT INTO stock_reservations (order_id, product_id, quantity, expires_at)
SELECT o.id, p.id, 1, now() + interval '1 day' FROM o, p
"""

# Paid orders for the mixed stream's refunds and disputes: each knows its payment intent and charge.
SEED_PAID = """
INSERT INTO orders (id, user_id, status, amount_total, currency, stripe_payment_intent_id, stripe_charge_id, paid_at)
SELECT id, 'bench-user', 'paid', 1000, 'eur', 'pi_' || md5(id::text), 'ch_' || md5(id::text), now()
FROM unnest($1::uuid[]) AS id
"""

# Events applied before the run, as in a production ledger. Without them the ledger is empty when the planner
# statistics are taken, and a server's cached plan for the ledger look-up stays a sequential scan while the run
# fills the table, until autovacuum analyzes it again: a cost the bench would create and no production has.
HISTORY = """
INSERT INTO webhook_events (stripe_event_id, type, livemode, stripe_created, status, attempts, payload, processed_at)
SELECT 'evt_past_' || n, 'payment_intent.succeeded', false, now(), 'processed', 1, '{}', now()
FROM generate_series(1, $1) AS n
"""


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} not healthy")


def envelope(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }


def pi_event(order_id: str) -> dict[str, Any]:
    return envelope(
        "payment_intent.succeeded",
        {
            "id": "pi_" + secrets.token_hex(12),
            "object": "payment_intent",
            "amount": 1000,
            "amount_received": 1000,
            "currency": "eur",
            "customer": None,
            "latest_charge": "ch_" + secrets.token_hex(12),
            "livemode": False,
            "metadata": {"order_id": order_id},
            "status": "succeeded",
            "payment_method_types": ["card"],
        },
    )


def session_event(order_id: str) -> dict[str, Any]:
    return envelope(
        "checkout.session.completed",
        {
            "id": "cs_test_" + secrets.token_hex(24),
            "object": "checkout.session",
            "amount_total": 1000,
            "currency": "eur",
            "customer": None,
            "customer_details": {"email": None},
            "metadata": {"order_id": order_id},
            "mode": "payment",
            "payment_intent": "pi_" + secrets.token_hex(12),
            "payment_status": "paid",
            "status": "complete",
        },
    )


def paid_ids(order_id: str) -> tuple[str, str]:
    """The payment intent and charge SEED_PAID gave a paid order."""
    digest = hashlib.md5(order_id.encode()).hexdigest()
    return "pi_" + digest, "ch_" + digest


def refund_event(paid_order: str) -> dict[str, Any]:
    pi, charge = paid_ids(paid_order)
    refund = {"id": "re_" + secrets.token_hex(12), "object": "refund", "amount": 300, "charge": charge}
    return envelope("refund.created", {**refund, "currency": "eur", "payment_intent": pi, "status": "succeeded"})


def dispute_event(paid_order: str) -> dict[str, Any]:
    pi, charge = paid_ids(paid_order)
    dispute = {"id": "dp_" + secrets.token_hex(12), "object": "dispute", "amount": 1000, "charge": charge}
    return envelope(
        "charge.dispute.created",
        {**dispute, "currency": "eur", "payment_intent": pi, "reason": "fraudulent", "status": "needs_response"},
    )


def renewal_events() -> list[dict[str, Any]]:
    """A subscription renewal: its invoice paid, then the subscription's new period."""
    sub, customer, now = "sub_" + secrets.token_hex(8), "cus_" + secrets.token_hex(8), int(time.time())
    price = {"id": "price_bench", "object": "price", "currency": "eur", "unit_amount": 999, "recurring": {}}
    invoice = {
        "id": "in_" + secrets.token_hex(12),
        "object": "invoice",
        "amount_paid": 999,
        "billing_reason": "subscription_cycle",
        "created": now,
        "currency": "eur",
        "customer": customer,
        "status": "paid",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub, "metadata": {}}},
        "lines": {"object": "list", "data": [{"pricing": {"price_details": {"price": "price_bench"}}}]},
    }
    item = {"price": price, "quantity": 1, "current_period_start": now, "current_period_end": now + 2_592_000}
    subscription = {
        "id": sub,
        "object": "subscription",
        "cancel_at_period_end": False,
        "created": now - 2_592_000,
        "currency": "eur",
        "customer": customer,
        "items": {"object": "list", "data": [item]},
        "metadata": {},
        "status": "active",
    }
    return [envelope("invoice.paid", invoice), envelope("customer.subscription.updated", subscription)]


def mixed_events(pending: list[str], paid: list[str], count: int) -> list[dict[str, Any]]:
    """`count` events of the mixed stream, shuffled: payment intents and sessions for `pending` orders, refunds and
    disputes of `paid` orders (each order used once), subscription renewals."""
    events: list[dict[str, Any]] = []
    shares = (("intent", 40), ("session", 20), ("refund", 15), ("dispute", 5), ("renewal", 20))
    for kind, share in shares:
        for _ in range(count * share // 100 // (2 if kind == "renewal" else 1)):
            if kind == "intent":
                events.append(pi_event(pending.pop()))
            elif kind == "session":
                events.append(session_event(pending.pop()))
            elif kind == "refund":
                events.append(refund_event(paid.pop()))
            elif kind == "dispute":
                events.append(dispute_event(paid.pop()))
            else:
                events.extend(renewal_events())
    random.shuffle(events)
    return events


# ---------------------------------------------------------------------------- load


async def blast(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], dict[str, int]]:
    """POST every body once with `concurrency` workers; (events/s, latencies in ms, statuses)."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://127.0.0.1:{port}/stripe/webhook"

        async def worker() -> None:
            while queue:
                body = queue.pop()
                headers = {
                    "Stripe-Signature": sign(body, SECRET, int(time.time())),
                    "Content-Type": "application/json",
                }
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    key = str(response.status) if response.status != 200 else orjson.loads(payload)["status"]
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[key] = statuses.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(bodies) / elapsed, latencies, statuses


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every PostgreSQL process on this machine (backends and background workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def idle_ticks() -> tuple[int, int]:
    """The machine's idle (and I/O wait) ticks and all ticks so far, every CPU together (/proc/stat)."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


class CpuMeter:
    """CPU seconds spent by the server under test, by PostgreSQL and by this load generator during one run, and
    the share of the machine's CPU time left idle."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start = self._sample()
        self.idle_start = idle_ticks()

    def _sample(self) -> tuple[float, float, float]:
        return (
            cpu_seconds(self.server_pid),
            sum(cpu_seconds(pid) for pid in postgres_pids()),
            time.process_time(),
        )

    def stop(self) -> tuple[float, float, float]:
        end = self._sample()
        return (end[0] - self.start[0], end[1] - self.start[1], end[2] - self.start[2])

    def idle_share(self) -> float:
        idle, total = idle_ticks()
        return (idle - self.idle_start[0]) / max(1, total - self.idle_start[1])


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def bench(url: str, rounds: int, per_run: int, concurrencies: list[int]) -> None:
    name = f"gw_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = with_database(url, name)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        con = await asyncpg.connect(db_url)
        await migrations.migrate(con)
        runs = rounds * len(concurrencies) * 2
        order_ids = [str(uuid.uuid4()) for _ in range(runs * per_run * 2)]  # payment and mixed streams
        paid_orders = [str(uuid.uuid4()) for _ in range(runs * per_run // 5)]
        await con.execute(SEED, order_ids, "BENCH-" + secrets.token_hex(4))
        await con.execute(SEED_PAID, paid_orders)
        await con.execute(HISTORY, len(order_ids))
        await con.execute("ANALYZE")  # planner statistics, as a production database has them
        await con.close()
        events = iter(order_ids)

        gw_port, ref_port, metrics_port = free_port(), free_port(), free_port()
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        log = open(ROOT / "bench" / "results" / "webhook-gateway.log", "wb")  # noqa: ASYNC230
        env = {
            **os.environ,
            "APP_ENV": "test",
            "DATABASE_URL": db_url,
            "HOST": "127.0.0.1",
            "PORT": str(gw_port),
            "METRICS_HOST": "127.0.0.1",
            "METRICS_PORT": str(metrics_port),
            "WORKERS": "1",
            "LOG_LEVEL": "WARNING",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "TRUSTED_HOSTS": "127.0.0.1,localhost",
            "RATE_LIMIT_WEBHOOK_MAX": "100000000",
            "DB_POOL_MIN": "4",
            "DB_POOL_MAX": "20",
            "RESERVATION_SWEEP_INTERVAL_SECONDS": "0",
            "JWT_SECRET": "j" * 40,
            "SHUTDOWN_DRAIN_SECONDS": "0",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--reference-server", str(ref_port), db_url],
                cwd=ROOT,
            )
        )
        wait_healthy(gw_port, procs[0])
        wait_healthy(ref_port, procs[1])

        results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        cpu: dict[tuple[str, str, int], list[tuple[float, ...]]] = {}
        # Warm-up, both servers (connections opened, statements prepared): events for orders that do not exist,
        # which the gateway records as ignored and the reference as processed without an order to update.
        for port in (gw_port, ref_port):
            await blast(port, [orjson.dumps(pi_event(str(uuid.uuid4()))) for _ in range(200)], 16)
        servers = [("gateway", gw_port, procs[0]), ("reference", ref_port, procs[1])]
        for round_ in range(rounds):
            for concurrency in concurrencies:
                # Every other round starts with the reference: neither server always runs right after the
                # other one's writes (autovacuum, checkpoints and dirty pages they leave behind).
                for label, port, proc in servers if round_ % 2 == 0 else servers[::-1]:
                    payment = [orjson.dumps(pi_event(next(events))) for _ in range(per_run)]
                    pending = [next(events) for _ in range(per_run)]
                    mixed = [orjson.dumps(e) for e in mixed_events(pending, paid_orders, per_run)]
                    # then the payment stream's events again: a duplicate-only stream
                    for stream, bodies in (("payment", payment), ("mixed", mixed), ("duplicate", payment)):
                        meter = CpuMeter(proc.pid)
                        rate, lat, statuses = await blast(port, bodies, concurrency)
                        used = meter.stop()
                        expected = "duplicate" if stream == "duplicate" else "processed"
                        assert statuses.get(expected) == len(bodies), (label, stream, statuses)
                        results.setdefault((label, stream, concurrency), []).append((rate, p99(lat)))
                        per_event = tuple(u / len(bodies) * 1e6 for u in used)
                        cpu.setdefault((label, stream, concurrency), []).append((*per_event, meter.idle_share() * 100))
            print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)

        print(f"\n{per_run} events per run, {rounds} interleaved rounds, medians")
        print("(round ratios: the lowest and highest gateway/reference ratio of a single round)")
        print(
            f"{'stream':<10} {'conc':>4} {'gateway ev/s':>13} {'ref ev/s':>10} {'ratio':>6} {'round ratios':>13} "
            f"{'gw p99 ms':>10} {'ref p99 ms':>10}"
        )
        for stream in ("payment", "mixed", "duplicate"):
            for concurrency in concurrencies:
                gw = results[("gateway", stream, concurrency)]
                ref = results[("reference", stream, concurrency)]
                gw_rate = statistics.median(r for r, _ in gw)
                ref_rate = statistics.median(r for r, _ in ref)
                per_round = [g / r for (g, _), (r, _) in zip(gw, ref, strict=True)]
                spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
                print(
                    f"{stream:<10} {concurrency:>4} {gw_rate:>13.0f} {ref_rate:>10.0f} {gw_rate / ref_rate:>6.2f} "
                    f"{spread:>13} "
                    f"{statistics.median(p for _, p in gw):>10.1f} {statistics.median(p for _, p in ref):>10.1f}"
                )
        print("\nCPU microseconds per event (medians over the rounds): server process, PostgreSQL, load generator;")
        print("and the share of the machine's CPU time left idle during the runs")
        print(f"{'server':<10} {'stream':<10} {'conc':>4} {'server':>7} {'postgres':>9} {'loadgen':>8} {'idle %':>7}")
        for (label, stream, concurrency), samples in sorted(cpu.items(), key=lambda item: (item[0][1], item[0][2])):
            m = [statistics.median(s[i] for s in samples) for i in range(4)]
            print(f"{label:<10} {stream:<10} {concurrency:>4} {m[0]:>7.0f} {m[1]:>9.0f} {m[2]:>8.0f} {m[3]:>7.1f}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reference-server":
        run_reference(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=2000, help="events per run")
    parser.add_argument("--concurrency", default="16,64")
    args = parser.parse_args()
    asyncio.run(bench(args.url, args.rounds, args.events, [int(c) for c in args.concurrency.split(",")]))


if __name__ == "__main__":
    main()
