"""Support commands of the runbook: `gateway events ...`, `gateway reservations ...`.

    gateway events show <evt_id>
    gateway events find (--session cs_... | --order <uuid> | --payment-intent pi_...) [--limit N] [--payload]
    gateway events replay (<evt_id> | --pending | --failed) [--limit N]
    gateway events reconcile [--since 30d] [--type TYPE ...]
    gateway reservations sweep [--batch N]

Output is JSON on stdout, problems on stderr.
Exit codes: 0 ok, 1 something failed, 2 usage error or not found, 3 database unavailable (gateway/exits.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from gateway import context, exits
from gateway.cli import add_database_option, database_url, print_json
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.pool import create_pool
from gateway.progress import Progress
from gateway.settings import Settings
from gateway.support import events as support_events
from gateway.support.reconcile import parse_since, reconcile
from gateway.support.reservations import DEFAULT_BATCH, sweep_expired

OK, FAILED, USAGE = exits.OK, exits.FAILED, exits.USAGE

Job = Callable[[asyncpg.Pool], Awaitable[int]]


def _error(message: str) -> None:
    print(f"gateway: {message}", file=sys.stderr)


def with_pool(args: argparse.Namespace, settings: Settings, job: Job, *, request_id: str | None = None) -> int:
    """Resolve the database as `gateway migrate` does, run `job` with a small pool, close it. An unusable
    database is the one-line OperationalError of gateway/exits.py."""
    url = database_url(args, settings)

    async def run() -> int:
        if request_id is not None:  # log lines of this run carry its request id
            context.current.set(context.RequestContext(request_id=request_id, route="cli"))
        pool = await create_pool(settings, url, min_size=1, max_size=2)
        try:
            return await job(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except UNAVAILABLE_ERRORS as exc:
        raise exits.database_failure(exc, url) from None


# ------------------------------------------------------------------ events show / find


def cmd_events_show(args: argparse.Namespace, settings: Settings) -> int:
    async def job(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as con:
            found = await support_events.show_event(con, args.event_id)
        if found is None:
            _error(f"no ledger row for {args.event_id} (never received: see `gateway events reconcile`)")
            return USAGE
        print_json(found)
        return OK

    return with_pool(args, settings, job)


def cmd_events_find(args: argparse.Namespace, settings: Settings) -> int:
    async def job(pool: asyncpg.Pool) -> int:
        async with pool.acquire() as con:
            try:
                if args.waiting:
                    found = await support_events.waiting_events(con, limit=args.limit, with_payload=args.payload)
                else:
                    found = await support_events.find_events(
                        con,
                        session_id=args.session,
                        order_id=args.order,
                        payment_intent_id=args.payment_intent,
                        limit=args.limit,
                        with_payload=args.payload,
                    )
            except support_events.InvalidQuery as exc:
                _error(str(exc))
                return USAGE
        print_json(found)
        if args.waiting:
            return OK
        if found["order"] is None and not found["events"]:
            _error("no order and no ledger row match")
            return USAGE
        return OK

    return with_pool(args, settings, job)


# ------------------------------------------------------------------ events replay


def cmd_events_replay(args: argparse.Namespace, settings: Settings) -> int:
    modes = [m for m in (args.event_id, args.pending, args.failed) if m]
    if len(modes) != 1:
        _error("events replay: give one of <evt_id>, --pending, --failed")
        return USAGE
    if args.limit is not None and args.limit < 1:
        _error("events replay: --limit must be at least 1")
        return USAGE
    if not settings.webhook_handlers_enabled:
        _error("note: WEBHOOK_HANDLERS_ENABLED=false here; an explicit replay applies the handlers anyway")
    request_id = support_events.new_request_id("replay")

    async def job(pool: asyncpg.Pool) -> int:
        if args.event_id:
            result = await support_events.replay_event(
                pool, args.event_id, app_source=settings.app_source, request_id=request_id
            )
            if result.outcome == "not_found":
                _error(f"no ledger row for {args.event_id}")
                return USAGE
            print_json({"request_id": request_id, **result.as_dict()})
            return FAILED if result.outcome == "failed" else OK
        progress = Progress.for_terminal()
        summary = await support_events.replay_by_status(
            pool,
            "received" if args.pending else "failed",
            app_source=settings.app_source,
            limit=args.limit,
            request_id=request_id,
            progress=progress,
        )
        counts = ", ".join(f"{n} {outcome}" for outcome, n in summary.outcomes.items() if n) or "nothing to replay"
        progress.finish(f"replayed {summary.selected} {summary.status} events: {counts}")
        print_json({"request_id": request_id, **summary.as_dict()})
        return FAILED if summary.failed else OK

    return with_pool(args, settings, job, request_id=request_id)


# ------------------------------------------------------------------ events reconcile


def cmd_events_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.stripe_client import build_stripe_client, close_stripe_client

    try:
        window = parse_since(args.since)
    except ValueError as exc:
        _error(str(exc))
        return USAGE
    if not settings.stripe_secret_key:
        _error("STRIPE_SECRET_KEY is not set: cannot call Stripe's Events API")
        return USAGE
    request_id = support_events.new_request_id("reconcile")

    async def job(pool: asyncpg.Pool) -> int:
        client = build_stripe_client(settings)
        progress = Progress.for_terminal()
        try:
            report = await reconcile(
                pool,
                client,
                window_seconds=window,
                request_id=request_id,
                handlers_enabled=settings.webhook_handlers_enabled,
                app_source=settings.app_source,
                required_livemode=settings.stripe_livemode,
                types=args.types or (),
                progress=progress,
            )
        finally:
            await close_stripe_client(client)
        progress.finish(
            f"reconciled: {report.seen} events seen, {report.already_known} already known, "
            f"{report.ingested} ingested, {report.failed} failed"
        )
        print_json(report.as_dict())
        if report.error:
            _error(f"Stripe events listing stopped: {report.error}")
        return FAILED if report.failed or report.error else OK

    return with_pool(args, settings, job, request_id=request_id)


# ------------------------------------------------------------------ reservations sweep


def cmd_reservations_sweep(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch < 1:
        _error("reservations sweep: --batch must be at least 1")
        return USAGE

    async def job(pool: asyncpg.Pool) -> int:
        progress = Progress.for_terminal()
        released = await sweep_expired(pool, batch=args.batch, progress=progress)
        progress.finish(f"released {released} expired reservations")
        print_json({"released": released})
        return OK

    return with_pool(args, settings, job, request_id=support_events.new_request_id("sweep"))


# ------------------------------------------------------------------ registration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser("events", help="find, show, replay and reconcile Stripe events (runbook)")
    events_sub = events.add_subparsers(dest="events_command", required=True)

    show = events_sub.add_parser("show", help="a ledger row, its payload, order, audit rows, bridge events")
    show.add_argument("event_id", metavar="EVT_ID")
    add_database_option(show)
    show.set_defaults(func=cmd_events_show)

    find = events_sub.add_parser(
        "find", help="ledger rows of a checkout session, order or payment intent, or the kept (waiting) ones"
    )
    key = find.add_mutually_exclusive_group(required=True)
    key.add_argument("--session", metavar="CS_ID", help="Checkout Session id (cs_...)")
    key.add_argument("--order", metavar="UUID", help="order id")
    key.add_argument("--payment-intent", dest="payment_intent", metavar="PI_ID", help="PaymentIntent id (pi_...)")
    key.add_argument("--waiting", action="store_true", help="events kept until their order is known, oldest first")
    find.add_argument("--limit", type=int, default=100, help="most rows to list (newest first; default 100)")
    find.add_argument("--payload", action="store_true", help="include each event's payload")
    add_database_option(find)
    find.set_defaults(func=cmd_events_find)

    replay = events_sub.add_parser(
        "replay", help="re-process a stored event (never one already processed, ignored or stale)"
    )
    replay.add_argument("event_id", nargs="?", metavar="EVT_ID")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--pending", action="store_true", help="every `received` event (kill switch), oldest first")
    which.add_argument("--failed", action="store_true", help="every `failed` event, oldest first")
    replay.add_argument("--limit", type=int, help="with --pending/--failed: at most this many events")
    add_database_option(replay)
    replay.set_defaults(func=cmd_events_replay)

    rec = events_sub.add_parser("reconcile", help="ingest events the ledger misses from Stripe's Events API")
    rec.add_argument("--since", default="30d", help="window: 30d, 12h, 90m... (at most 30 days; default 30d)")
    rec.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help="only this event type (repeatable; `checkout.session.*` patterns allowed)",
    )
    add_database_option(rec)
    rec.set_defaults(func=cmd_events_reconcile)

    reservations = sub.add_parser("reservations", help="stock reservations")
    res_sub = reservations.add_subparsers(dest="reservations_command", required=True)
    sweep = res_sub.add_parser("sweep", help="release every expired held reservation now")
    sweep.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="reservations per transaction")
    add_database_option(sweep)
    sweep.set_defaults(func=cmd_reservations_sweep)
