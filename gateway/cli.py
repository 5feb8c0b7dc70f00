"""`gateway` command line: serve, migrate, check-config and the support commands of the runbook."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson

from gateway import log as logging_setup
from gateway.db import migrate as migrations
from gateway.db.pool import connect
from gateway.settings import ConfigError, Settings, describe, load_settings

Command = Callable[[argparse.Namespace, Settings], int]


def print_json(value: Any) -> None:
    """Command results: indented JSON on stdout (logs go to stderr)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    sys.stdout.flush()


def with_connection(
    args: argparse.Namespace, settings: Settings, job: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    from gateway.server import resolve_database_url

    url = resolve_database_url(settings)

    async def run() -> int:
        con = await connect(url)
        try:
            return await job(con)
        finally:
            await con.close()

    return asyncio.run(run())


# ------------------------------------------------------------------ commands


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    serve(dataclasses.replace(settings, **overrides))
    return 0


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    print_json({"status": "ok", "settings": describe(settings)})
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def job(con: asyncpg.Connection) -> int:
        if args.status:
            rows = await migrations.status(con)
            for row in rows:
                state = f"applied {row.applied_at:%Y-%m-%d %H:%M:%S}" if row.applied_at else "pending"
                print(f"{row.version:04d}_{row.name}: {state}")
            return 0
        applied = await migrations.migrate(con)
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        if not applied:
            print("database is up to date")
        return 0

    try:
        return with_connection(args, settings, job)
    except migrations.MigrationError as exc:
        print(f"migration error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Stripe payments gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (migrates first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate the configuration and print it (secrets masked)")
    check.set_defaults(func=cmd_check_config)

    mig = sub.add_parser("migrate", help="apply pending SQL migrations (safe from several pods at once)")
    mig.add_argument("--status", action="store_true", help="list applied and pending migrations")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        if args.command == "check-config":
            print_json({"status": "invalid", "problems": exc.problems})
        return 2
    logging_setup.configure(settings.log_level, to_stderr=args.command != "serve")
    func: Command = args.func
    return func(args, settings)
