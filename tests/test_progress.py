"""Issue 20, item 7: reconcile, replay --pending|--failed, products import and reservations sweep show progress on
a terminal (count, rate, time left) and a summary at the end; off a terminal their output stays machine-readable
(JSON on stdout, no progress line anywhere)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.progress import Progress
from tests.cli_process import ROOT, clean_env
from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_events import checkout_session, make_event, new_id
from tests.support_helpers import deliver


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_line_has_count_rate_and_time_left() -> None:
    terminal, clock = Terminal(), Clock()
    progress = Progress(terminal, clock=clock)
    progress.phase("replaying failed events", 100)
    clock.now += 5
    progress.advance(25)
    assert progress.line() == "replaying failed events: 25/100  5.0/s  15s left"
    clock.now += 1
    progress.finish("replayed 100 failed events: 100 processed")
    assert terminal.getvalue().endswith("\r\033[Kreplayed 100 failed events: 100 processed (6s)\n")


def test_off_a_terminal_progress_writes_nothing() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    progress.phase("importing products", 3)
    progress.advance(3)
    progress.finish("imported 3 products")
    assert stream.getvalue() == ""


async def run(argv: list[str], env: dict[str, str], tmp_path: Path, *, on_terminal: bool) -> tuple[int, str, str]:
    """`gateway <argv>` with stderr on a pseudo-terminal (`on_terminal`) or a pipe; (code, stdout, stderr)."""
    full_env = clean_env({**env, "LOG_LEVEL": "WARNING"}, tmp_path)
    primary, secondary = pty.openpty() if on_terminal else (None, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *argv,
        env=full_env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=secondary if secondary is not None else asyncio.subprocess.PIPE,
    )  # fmt: skip
    if secondary is not None:
        os.close(secondary)
    stdout, stderr = await process.communicate()
    if primary is not None:
        stderr = await asyncio.to_thread(_drain, primary)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode(errors="replace")


def _drain(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:  # EIO: the other side is closed
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def assert_progress(stderr: str, label: str, summary: str) -> None:
    assert f"\r\033[K{label}: " in stderr, stderr
    assert "/s" in stderr and " left" in stderr, stderr
    assert summary in stderr.rsplit("\r\033[K", 1)[-1], stderr


def assert_machine_readable(stdout: str, stderr: str) -> Any:
    assert "\r" not in stderr and "/s" not in stderr, stderr
    return json.loads(stdout)


@pytest.mark.parametrize("on_terminal", [True, False], ids=["terminal", "pipe"])
async def test_products_import(db_pool: asyncpg.Pool, database_url: str, tmp_path: Path, on_terminal: bool) -> None:
    code, out, err = await run(
        ["products", "import", str(ROOT / "examples" / "catalog.json")],
        {"DATABASE_URL": database_url},
        tmp_path,
        on_terminal=on_terminal,
    )
    assert code == 0, err
    if on_terminal:
        assert_progress(err, "importing products", "imported 6 products: 6 new, 0 updated")
    report = assert_machine_readable(out, "" if on_terminal else err)
    assert (report["products"], report["inserted"], report["updated"]) == (6, 6, 0)


@pytest.mark.parametrize("on_terminal", [True, False], ids=["terminal", "pipe"])
async def test_reservations_sweep(db_pool: asyncpg.Pool, database_url: str, tmp_path: Path, on_terminal: bool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=10)
        for _ in range(3):
            await create_order(con, [(product, 1)], expires_in=timedelta(minutes=-1))

    code, out, err = await run(
        ["reservations", "sweep", "--batch", "2"], {"DATABASE_URL": database_url}, tmp_path, on_terminal=on_terminal
    )

    assert code == 0, err
    if on_terminal:
        assert_progress(err, "releasing expired reservations", "released 3 expired reservations")
    assert assert_machine_readable(out, "" if on_terminal else err) == {"released": 3}


@pytest.mark.parametrize("on_terminal", [True, False], ids=["terminal", "pipe"])
async def test_replay_pending(db_pool: asyncpg.Pool, database_url: str, tmp_path: Path, on_terminal: bool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=10)
        orders = [await create_order(con, [(product, 1)]) for _ in range(3)]
    for order in orders:  # the kill switch was on: recorded, not applied
        event = make_event("checkout.session.completed", checkout_session(order))
        await deliver(db_pool, event, handlers_enabled=False)

    code, out, err = await run(
        ["events", "replay", "--pending"], {"DATABASE_URL": database_url}, tmp_path, on_terminal=on_terminal
    )

    assert code == 0, err
    if on_terminal:
        assert_progress(err, "replaying received events", "replayed 3 received events: 3 processed")
    report = assert_machine_readable(out, "" if on_terminal else err)
    assert report["selected"] == 3


@pytest.mark.parametrize("on_terminal", [True, False], ids=["terminal", "pipe"])
async def test_reconcile(
    db_pool: asyncpg.Pool, database_url: str, fake_stripe: FakeStripe, tmp_path: Path, on_terminal: bool
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=10)
        orders = [await create_order(con, [(product, 1)]) for _ in range(3)]
    now = int(time.time())
    fake_stripe.add_events(
        make_event("checkout.session.completed", checkout_session(order), created=now - 60 + i)
        for i, order in enumerate(orders)
    )
    env = {"DATABASE_URL": database_url, "STRIPE_API_BASE": fake_stripe.base_url}

    code, out, err = await run(["events", "reconcile", "--since", "1d"], env, tmp_path, on_terminal=on_terminal)

    assert code == 0, err
    if on_terminal:
        assert "\r\033[Klisting Stripe events: " in err
        assert_progress(err, "ingesting missing events", "reconciled: 3 events seen, 0 already known, 3 ingested")
    report = assert_machine_readable(out, "" if on_terminal else err)
    assert report["ingested"] == 3
