"""`gateway serve`: run the app, drain on SIGTERM, optionally in several processes sharing the port."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys

from aiohttp import web

from gateway import connections, keys, metrics
from gateway.app import create_app
from gateway.db.migrate import migrate
from gateway.db.pool import connect
from gateway.middleware.errors import install_protocol_error_answers
from gateway.settings import Settings

log = logging.getLogger("gateway.server")


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from gateway.db.embedded import start_embedded

    url = start_embedded(settings.data_dir)
    print(f"embedded PostgreSQL: {url}", file=sys.stderr, flush=True)
    return url


async def apply_migrations(url: str) -> None:
    con = await connect(url)
    try:
        applied = await migrate(con)
    finally:
        await con.close()
    for migration in applied:
        log.info("migration applied", extra={"migration": f"{migration.version:04d}_{migration.name}"})


async def run_app(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then: /ready turns 503, keep serving for the drain period, stop accepting,
    let in-flight requests finish (shutdown timeout), close resources."""
    install_protocol_error_answers()  # requests aiohttp cannot parse get the JSON error shape too
    runner = connections.app_runner(app, settings, shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    listener = await connections.start_listener(runner, settings, settings.host, settings.port, reuse_port=reuse_port)
    metrics.READY.set(1)
    log.info("gateway listening", extra={"host": settings.host, "port": settings.port})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    app[keys.LIFECYCLE].start_draining()
    metrics.READY.set(0)
    log.info("shutdown: draining", extra={"seconds": settings.shutdown_drain_seconds})
    await asyncio.sleep(settings.shutdown_drain_seconds)
    log.info("shutdown: closing listener, finishing in-flight requests")
    listener.close()
    await runner.cleanup()
    log.info("shutdown complete")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent: int) -> None:
    """A worker gets SIGTERM, and drains, when its parent dies without forwarding it (SIGKILL, the OOM killer),
    instead of serving on as an orphan that holds the port and database connections (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings) -> None:
    url = resolve_database_url(settings)
    asyncio.run(apply_migrations(url))
    if settings.workers == 1:
        _install_uvloop()
        asyncio.run(run_app(create_app(settings, database_url=url), settings))
        return
    children: list[int] = []
    parent = os.getpid()
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # worker
            _exit_with_parent(parent)
            _install_uvloop()
            asyncio.run(run_app(create_app(settings, database_url=url, worker_index=index), settings, reuse_port=True))
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    if status:
        raise SystemExit(status)
