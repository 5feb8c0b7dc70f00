"""`gateway dev send-event TYPE [--order ID]`: sign a sample event (gateway/dev/samples.py) with the webhook secret
and POST it to the local gateway, as Stripe's `stripe trigger` does.

The secret: --secret, else the first of STRIPE_WEBHOOK_SECRET, else the development secret `serve` generated in
GATEWAY_DATA_DIR. The address: --url, else http://127.0.0.1:PORT + STRIPE_WEBHOOK_PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson

from gateway import exits
from gateway.dev.samples import SAMPLE_TYPES, Sample, sample_event
from gateway.dev.webhook_secret import read_dev_secret, secret_path
from gateway.exits import OperationalError
from gateway.settings import Settings
from gateway.webhooks.signature import sign

SEND_TIMEOUT_SECONDS = 30.0


def webhook_secret(args: argparse.Namespace, settings: Settings) -> str:
    if args.secret:
        return str(args.secret)
    if settings.stripe_webhook_secrets:
        return settings.stripe_webhook_secrets[0]
    secret = read_dev_secret(settings.data_dir) if settings.app_env == "development" else None
    if secret is None:
        raise OperationalError(
            f"no webhook secret: set STRIPE_WEBHOOK_SECRET, pass --secret, or start `gateway serve` in development "
            f"once (it writes {secret_path(settings.data_dir)})",
            exits.USAGE,
        )
    return secret


def webhook_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.url:
        return str(args.url)
    return f"http://127.0.0.1:{settings.port}{settings.stripe_webhook_path}"


async def post_event(url: str, body: bytes, secret: str) -> tuple[int, Any]:
    headers = {
        "Stripe-Signature": sign(body, secret, int(time.time())),
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) gateway-dev",
    }
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, data=body, headers=headers) as r:
        text = await r.read()
        try:
            return r.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return r.status, text.decode(errors="replace")


def cmd_send_event(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.cli import print_json

    if args.amount < 1:
        raise OperationalError("dev send-event: --amount must be a positive amount in the smallest unit", exits.USAGE)
    try:
        order_id = str(uuid.UUID(args.order)) if args.order else None
    except ValueError:
        message = f"dev send-event: --order {args.order!r} is not an order id (UUID)"
        raise OperationalError(message, exits.USAGE) from None
    sample = Sample(
        order_id, amount=args.amount, currency=args.currency.lower(), user_id=args.user, key=uuid.uuid4().hex
    )
    event = sample_event(args.event_type, sample)
    body = orjson.dumps(event, option=orjson.OPT_INDENT_2)
    url = webhook_url(args, settings)
    try:
        status, answer = asyncio.run(post_event(url, body, webhook_secret(args, settings)))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OperationalError(
            f"dev send-event: no answer from {url} ({type(exc).__name__}); is the gateway running (`make run`)?",
            exits.FAILED,
        ) from None
    print_json(
        {
            "event_id": event["id"],
            "type": args.event_type,
            "order_id": order_id,
            "checkout_session_id": sample.session_id,
            "payment_intent_id": sample.payment_intent_id,
            "url": url,
            "status": status,
            "answer": answer,
        }
    )
    return exits.OK if 200 <= status < 300 else exits.FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="development helpers (signed sample webhooks)")
    actions = dev.add_subparsers(dest="dev_command", required=True)
    send = actions.add_parser(
        "send-event",
        help="sign a sample Stripe event and POST it to the local gateway (like `stripe trigger`)",
        description="Types: " + ", ".join(SAMPLE_TYPES),
    )
    send.add_argument("event_type", metavar="TYPE", choices=SAMPLE_TYPES, help="e.g. checkout.session.completed")
    send.add_argument(
        "--order",
        metavar="ID",
        help="the order id (UUID) the event names; without it, no order of ours (a completed session creates one)",
    )
    send.add_argument("--amount", type=int, default=2000, help="amount in the smallest unit (default 2000)")
    send.add_argument("--currency", default="eur", help="currency (default eur)")
    send.add_argument("--user", metavar="USER_ID", help="metadata.user_id of the event's objects")
    send.add_argument("--url", help="webhook URL (default http://127.0.0.1:PORT + STRIPE_WEBHOOK_PATH)")
    send.add_argument("--secret", help="signing secret (default: STRIPE_WEBHOOK_SECRET, else the development one)")
    send.set_defaults(func=cmd_send_event)
