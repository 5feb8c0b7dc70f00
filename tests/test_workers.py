"""`gateway serve --workers 2`: two processes share the port through SO_REUSEPORT, each with its own metrics
listener (METRICS_PORT + worker index); SIGTERM to the parent drains both and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from gateway.settings import SETTING_FIELDS
from tests.conftest import BASE_ENV
from tests.test_shutdown import get, poll

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = 200


def free_port_pair() -> tuple[int, int]:
    """A public port and two consecutive free metrics ports (worker 0 and worker 1)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b, socket.socket() as c:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            metrics = b.getsockname()[1]
            try:
                c.bind(("127.0.0.1", metrics + 1))
            except OSError:
                continue
            return int(a.getsockname()[1]), int(metrics)
    raise RuntimeError("no free ports")


def served(metrics_text: str) -> float:
    total = 0.0
    for match in re.finditer(r'^http_requests_total\{[^}]*route="health"[^}]*\} ([0-9.e+]+)$', metrics_text, re.M):
        total += float(match[1])
    return total


async def start_two_workers(database_url: str, tmp_path: Path) -> tuple[asyncio.subprocess.Process, int, int]:
    """`gateway serve --workers 2`; (the parent process, the public port, worker 0's metrics port)."""
    port, metrics_port = free_port_pair()
    env = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in SETTING_FIELDS}}
    env.update(BASE_ENV)
    env.update(
        {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "SHUTDOWN_DRAIN_SECONDS": "0.5",
            "GATEWAY_ENV_FILE": str(tmp_path / "absent.env"),
            "PYTHONPATH": str(ROOT),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--workers", "2", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return process, port, metrics_port


async def test_two_workers_share_the_port_and_drain_on_sigterm(database_url: str, tmp_path: Path) -> None:
    process, port, metrics_port = await start_two_workers(database_url, tmp_path)
    base = f"http://127.0.0.1:{port}"
    metrics_urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(2)]
    try:
        await poll(lambda: get(base + "/health"), within=30, interval=0.1)
        for url in metrics_urls:
            await poll(lambda url=url: get(url), within=30, interval=0.1)
        before = [served((await get(url) or (0, ""))[1]) for url in metrics_urls]

        for _ in range(REQUESTS):  # a new connection each time, so the kernel spreads them over both sockets
            assert await get(base + "/health") == (200, '{"status":"ok"}')

        after = [served((await get(url) or (0, ""))[1]) for url in metrics_urls]
        public_metrics = await get(base + "/metrics")
        assert public_metrics is not None and public_metrics[0] == 404  # metrics never on the public port
        handled = [a - b for a, b in zip(after, before, strict=True)]
        assert sum(handled) == REQUESTS
        assert all(n > 0 for n in handled), handled  # both workers took part

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
async def test_workers_exit_when_their_parent_is_killed(database_url: str, tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) cannot be forwarded: the workers must not serve on as orphans."""
    process, port, _ = await start_two_workers(database_url, tmp_path)
    base = f"http://127.0.0.1:{port}"
    workers: list[int] = []
    try:
        await poll(lambda: get(base + "/health"), within=30, interval=0.1)
        workers = children_of(process.pid)
        assert len(workers) == 2

        process.kill()
        await process.wait()

        async def workers_gone() -> bool:
            return not any(alive(pid) for pid in workers)

        await poll(workers_gone, within=30, interval=0.1)
        assert await get(base + "/health") is None  # nothing listens any more
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in workers:  # a failure must not leave them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
