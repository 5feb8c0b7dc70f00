"""Benchmark: /health requests per second through the full stack (the real app, every middleware, JSON access
log) versus a bare aiohttp app answering the same JSON, measured in the same run, in interleaved rounds.

    python bench/health.py [--rounds 15] [--seconds 2] [--connections 32] [--database-url URL]

Both servers run in their own process, one worker each, uvloop and no aiohttp access log, as `gateway serve`
runs. The full app logs its JSON access line per request to /dev/null (formatting and redaction included).
The load generator is `wrk` (Debian package `wrk`) when present, else an aiohttp client in another process.
Only 127.0.0.1 is used. The figure reported is the median of the per-round ratios full/bare (target >= 0.8).

With two CPUs or more, the servers run on the first one and the load generator on another, so the generator does
not take CPU time from the server it measures (both servers get the same treatment). Each round also reports the
server's CPU time per request, read from /proc: a steadier figure than the rate on a shared machine.

The full app's pool needs a database (/health itself never queries it): --database-url, else BENCH_DATABASE_URL,
TEST_DATABASE_URL or DATABASE_URL, else the local PostgreSQL at postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------------ servers


SERVER_CPU = 0
GENERATOR_CPUS = set(range(1, os.cpu_count() or 1))


def pin(cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def serve(kind: str, port: int, database_url: str, log_level: str) -> None:
    from aiohttp import web

    pin({SERVER_CPU} if GENERATOR_CPUS else set())

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    if kind == "bare":

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/health", health)
    else:
        from gateway import log
        from gateway.app import create_app
        from gateway.settings import load_settings

        settings = load_settings(
            {
                "APP_ENV": "development",
                "METRICS_PORT": "0",
                "LOG_LEVEL": log_level,
                "DATABASE_URL": database_url,
                "DB_POOL_MIN": "1",
                "RESERVATION_SWEEP_INTERVAL_SECONDS": "0",
            }
        )
        log.configure(settings.log_level)
        app = create_app(settings, database_url=database_url)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


# ----------------------------------------------------------------------------------------- load generators


def client_load(url: str, seconds: float, connections: int) -> None:
    """Fallback generator: `connections` keep-alive loops for `seconds`; prints `Requests/sec: N`."""
    import aiohttp

    async def main() -> None:
        count = 0
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

            async def worker() -> None:
                nonlocal count
                while time.monotonic() < deadline:
                    async with session.get(url) as response:
                        await response.read()
                        if response.status == 200:
                            count += 1

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.monotonic() - started
        print(f"{count} requests in {elapsed:.2f}s")
        print(f"Requests/sec: {count / elapsed:.2f}")

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(url: str, seconds: float, connections: int, server_pid: int | None = None) -> tuple[float, float]:
    """Requests per second, and the server's CPU microseconds per request (0 when not measured)."""
    wrk = shutil.which("wrk")
    if wrk:
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url]
    else:
        cmd = [
            sys.executable,
            __file__,
            "--load",
            url,
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
        ]
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        preexec_fn=lambda: pin(GENERATOR_CPUS),
    ).stdout
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not match:
        raise RuntimeError(f"no rate in the generator's output:\n{out}")
    if "Non-2xx" in out:
        raise RuntimeError(f"the server answered errors:\n{out}")
    return float(match[1]), (cpu * 1e6 / int(total[1]) if total and cpu else 0.0)


# ------------------------------------------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, database_url: str, log_level: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_ENV_FILE": os.devnull}
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--log-level",
            log_level,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"{kind} server did not start:\n{err[-3000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Many short rounds: on a shared machine a burst of noise then spoils a few pairs, not the median.
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="LOG_LEVEL of the full app (INFO: an access line per request, as in production)",
    )
    parser.add_argument("--serve", choices=["full", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(args.serve, args.port, args.database_url, args.log_level)
        return 0
    if args.load:
        client_load(args.load, args.seconds, args.connections)
        return 0
    generator = "wrk" if shutil.which("wrk") else "aiohttp client (wrk not found)"
    print(
        f"generator: {generator}; {args.rounds} rounds x {args.seconds:g} s per server, "
        f"{args.connections} connections, 127.0.0.1, full app LOG_LEVEL={args.log_level}"
    )
    full, full_url = start("full", args.database_url, args.log_level)
    bare, bare_url = start("bare", args.database_url, args.log_level)
    try:
        measure(full_url, 2, args.connections)  # warm-up
        measure(bare_url, 2, args.connections)
        ratios, cpu = [], {"full": [], "bare": []}
        for index in range(args.rounds):
            order = [("full", full_url, full.pid), ("bare", bare_url, bare.pid)]
            if index % 2:
                order.reverse()  # interleaved: neither server always runs first
            rates = {}
            for name, url, pid in order:
                rates[name], cpu_per_request = measure(url, args.seconds, args.connections, pid)
                cpu[name].append(cpu_per_request)
            ratio = rates["full"] / rates["bare"]
            ratios.append(ratio)
            print(
                f"round {index + 1}: full {rates['full']:9.0f} req/s {cpu['full'][-1]:5.1f} us CPU/req   "
                f"bare {rates['bare']:9.0f} req/s {cpu['bare'][-1]:5.1f} us CPU/req   ratio {ratio:.3f}"
            )
    finally:
        stop(full)
        stop(bare)
    median = statistics.median(ratios)
    print(
        f"server CPU per request, medians: full {statistics.median(cpu['full']):.1f} us, "
        f"bare {statistics.median(cpu['bare']):.1f} us"
    )
    print(f"median ratio full/bare: {median:.3f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
