"""`gateway stripe ...`: the webhook endpoint in Stripe and resyncs of single objects.

    gateway stripe endpoint ensure [--url URL]     create or update the endpoint (URL: STRIPE_WEBHOOK_URL by default)
    gateway stripe endpoint check [--url URL]      compare it with the code; exit 1 on any difference
    gateway stripe resync order <uuid> | subscription sub_... | customer cus_...

Output is JSON on stdout, problems on stderr. Exit codes: 0 ok, 1 a difference (check) or a failure, 2 usage error,
configuration missing or not found.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import stripe

from gateway import stripe_payload as sp
from gateway.cli import add_database_option, print_json
from gateway.settings import Settings
from gateway.stripe_account import endpoint
from gateway.stripe_account.resync import NotFound, Resync, ResyncReport
from gateway.stripe_client import build_stripe_client, close_stripe_client
from gateway.support.commands import FAILED, OK, USAGE, with_pool
from gateway.support.events import new_request_id


def _error(message: str) -> None:
    print(f"gateway: {message}", file=sys.stderr)


def _spec(args: argparse.Namespace, settings: Settings) -> endpoint.EndpointSpec | None:
    url = args.url or settings.stripe_webhook_url
    if not url:
        _error("give --url or set STRIPE_WEBHOOK_URL (the public URL Stripe posts to)")
        return None
    if not settings.stripe_secret_key:
        _error("STRIPE_SECRET_KEY is not set: cannot call Stripe's API")
        return None
    if not sp.reads_api_version(settings.stripe_api_version):
        _error(
            f"STRIPE_API_VERSION {settings.stripe_api_version} is not one the payload adapter reads (newest: "
            f"{sp.NEWEST_READ_API_VERSION}); see the runbook, STRIPE_API_VERSION"
        )
        return None
    return endpoint.EndpointSpec.for_url(url, settings.stripe_api_version)


def _endpoint_command(
    args: argparse.Namespace,
    settings: Settings,
    job: Callable[[stripe.StripeClient, endpoint.EndpointSpec], Awaitable[int]],
) -> int:
    spec = _spec(args, settings)
    if spec is None:
        return USAGE

    async def run() -> int:
        client = build_stripe_client(settings)
        try:
            return await job(client, spec)
        except stripe.StripeError as exc:
            _error(f"Stripe answered {exc.http_status}: {type(exc).__name__}: {exc.user_message or exc}")
            return FAILED
        finally:
            await close_stripe_client(client)

    return asyncio.run(run())


async def _ensure(client: stripe.StripeClient, spec: endpoint.EndpointSpec) -> int:
    report = await endpoint.ensure(client, spec)
    print_json(report.as_dict())
    if not report.changes:
        _error("nothing to change: the endpoint matches the code")
    return OK


async def _check(client: stripe.StripeClient, spec: endpoint.EndpointSpec) -> int:
    report = await endpoint.check(client, spec)
    print_json(report.as_dict())
    for difference in report.differences:
        _error(f"{difference.code}: {difference.detail} {' '.join(difference.values)}".rstrip())
    return FAILED if report.differences else OK


def cmd_endpoint_ensure(args: argparse.Namespace, settings: Settings) -> int:
    return _endpoint_command(args, settings, _ensure)


def cmd_endpoint_check(args: argparse.Namespace, settings: Settings) -> int:
    return _endpoint_command(args, settings, _check)


def cmd_resync(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.stripe_secret_key:
        _error("STRIPE_SECRET_KEY is not set: cannot call Stripe's API")
        return USAGE
    prefix = {"subscription": "sub_", "customer": "cus_"}.get(args.kind)
    if prefix is not None and not args.object_id.startswith(prefix):
        _error(f"stripe resync {args.kind}: the id must start with {prefix}")
        return USAGE
    request_id = new_request_id("resync")

    async def job(pool: asyncpg.Pool) -> int:
        client = build_stripe_client(settings)
        report = ResyncReport(target=f"{args.kind} {args.object_id}", request_id=request_id)
        resync = Resync(pool, client, settings, report)
        try:
            await getattr(resync, args.kind)(args.object_id)
        except NotFound as exc:
            _error(str(exc))
            return USAGE
        except stripe.StripeError as exc:
            _error(f"Stripe answered {exc.http_status}: {type(exc).__name__}: {exc.user_message or exc}")
            return FAILED
        finally:
            await close_stripe_client(client)
        print_json(report.as_dict())
        return FAILED if report.failed else OK

    return with_pool(args, settings, job, request_id=request_id)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stripe_parser = sub.add_parser("stripe", help="the Stripe account: webhook endpoint, resync of single objects")
    stripe_sub = stripe_parser.add_subparsers(dest="stripe_command", required=True)

    endpoint_parser = stripe_sub.add_parser("endpoint", help="the webhook endpoint, pinned to STRIPE_API_VERSION")
    endpoint_sub = endpoint_parser.add_subparsers(dest="endpoint_command", required=True)
    ensure = endpoint_sub.add_parser(
        "ensure", help="create or update it: the handled event types, STRIPE_API_VERSION, enabled"
    )
    check = endpoint_sub.add_parser("check", help="compare it with the code; exit 1 on a difference")
    for command, func in ((ensure, cmd_endpoint_ensure), (check, cmd_endpoint_check)):
        command.add_argument("--url", help="the endpoint's public URL (default: STRIPE_WEBHOOK_URL)")
        command.set_defaults(func=func)

    resync = stripe_sub.add_parser(
        "resync", help="apply the current state of an object fetched from Stripe (past the Events API's 30 days)"
    )
    resync.add_argument("kind", choices=("order", "subscription", "customer"))
    resync.add_argument("object_id", metavar="ID", help="order uuid, sub_... or cus_...")
    add_database_option(resync)
    resync.set_defaults(func=cmd_resync)
