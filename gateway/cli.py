"""`gateway` command line: serve, migrate, check-config and the support commands of the runbook."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson

from gateway import exits
from gateway import log as logging_setup
from gateway.db import migrate as migrations
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.exits import OperationalError
from gateway.preflight import checked_settings
from gateway.settings import ConfigError, Settings, describe
from gateway.version import VERSION

Command = Callable[[argparse.Namespace, Settings], int]


def print_json(value: Any) -> None:
    """Command results: indented JSON on stdout (logs go to stderr)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    sys.stdout.flush()


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """The `--embedded` option of every command that uses the database."""
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="without DATABASE_URL: use (and start if needed) the development PostgreSQL in GATEWAY_DATA_DIR",
    )


def database_url(args: argparse.Namespace, settings: Settings) -> str:
    """DATABASE_URL; the embedded PostgreSQL only when the command was given --embedded."""
    from gateway.server import resolve_database_url

    return resolve_database_url(settings, embedded=getattr(args, "embedded", False))


def with_connection(
    args: argparse.Namespace, settings: Settings, job: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    from gateway.server import open_connection

    url = database_url(args, settings)

    async def run() -> int:
        con = await open_connection(url)
        try:
            return await job(con)
        finally:
            await con.close()

    try:
        return asyncio.run(run())
    except UNAVAILABLE_ERRORS as exc:  # lost while working
        raise exits.database_failure(exc, url) from None


# ------------------------------------------------------------------ commands


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.server import serve

    serve(settings)  # --host, --port and --workers are in `settings` already (validated with the rest)
    return 0


def setting_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Command-line options that stand for settings, by environment name."""
    if args.command != "serve":
        return {}
    given = (("HOST", args.host), ("PORT", args.port), ("WORKERS", args.workers))
    return {env: str(value) for env, value in given if value is not None}


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    print_json({"status": "ok", "settings": describe(settings)})
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.server import run_migrations

    async def job(con: asyncpg.Connection) -> int:
        if args.status:
            rows = await migrations.status(con)
            for row in rows:
                state = f"applied {row.applied_at:%Y-%m-%d %H:%M:%S}" if row.applied_at else "pending"
                print(f"{row.version:04d}_{row.name}: {state}")
            return 0
        applied = await run_migrations(con)
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        if not applied:
            print("database is up to date")
        return 0

    try:
        return with_connection(args, settings, job)
    except migrations.MigrationError as exc:  # --status: an applied migration was edited or has no file
        raise OperationalError(f"migration error: {exc}", exits.MIGRATION_FAILED) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Stripe payments gateway",
        epilog=exits.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP server (migrates first; in development without DATABASE_URL: embedded PostgreSQL)",
    )
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", help="overrides PORT")
    serve.add_argument("--workers", help="overrides WORKERS: processes sharing the port (SO_REUSEPORT)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate the configuration and print it (secrets masked)")
    check.set_defaults(func=cmd_check_config)

    mig = sub.add_parser("migrate", help="apply pending SQL migrations (safe from several pods at once)")
    mig.add_argument("--status", action="store_true", help="list applied and pending migrations")
    add_database_option(mig)
    mig.set_defaults(func=cmd_migrate)

    from gateway.support import commands as support_commands

    support_commands.register(sub)
    from gateway.accounts import commands as accounts_commands
    from gateway.catalog import commands as catalog_commands

    catalog_commands.register(sub)
    accounts_commands.register(sub)
    from gateway.stripe_account import commands as stripe_commands

    stripe_commands.register(sub)
    from gateway.billing import commands as billing_commands

    billing_commands.register(sub)
    from gateway.dev import commands as dev_commands

    dev_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, validate the whole configuration (every problem at once, exit code 2, before any
    database is touched), run the command; an operational failure is one line on stderr and its exit code
    (gateway/exits.py)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = checked_settings(overrides=setting_overrides(args))
    except ConfigError as exc:
        report_config_error(exc, as_json=args.command == "check-config")
        return exits.USAGE
    logging_setup.configure(settings.log_level, to_stderr=args.command != "serve")
    func: Command = args.func
    try:
        return func(args, settings)
    except ConfigError as exc:  # a component's boot check, when the app starts
        report_config_error(exc, as_json=False)
        return exits.USAGE
    except OperationalError as exc:
        print(f"gateway: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr, flush=True)
        return exits.INTERRUPTED


def report_config_error(exc: ConfigError, *, as_json: bool) -> None:
    print(str(exc), file=sys.stderr, flush=True)
    if as_json:
        print_json({"status": "invalid", "problems": exc.problems})
