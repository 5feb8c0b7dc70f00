"""`gateway orders refund ORDER_ID [--amount N] [--reason R] [--idempotency-key K]`: the runbook's refund, the
same path as `POST /v1/admin/orders/{id}/refunds` (bounded by what is left to refund, audited as `cli`).

Without --idempotency-key a new key is made and printed with the answer: run the command again with it after a
timeout or a Stripe failure, and the same refund is completed instead of a second one being made.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import asyncpg

from gateway.billing import refunds
from gateway.billing.validation import REFUND_REASONS, RefundRequest
from gateway.cli import add_database_option, print_json
from gateway.errors import ApiError
from gateway.orders.queries import valid_uuid
from gateway.settings import Settings
from gateway.support import events as support_events
from gateway.support.commands import FAILED, OK, USAGE, with_pool


def cmd_orders_refund(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.stripe_client import build_stripe_client, close_stripe_client

    order_id = valid_uuid(args.order_id)
    if order_id is None:
        print("gateway: orders refund: ORDER_ID must be an order id (uuid)", file=sys.stderr)
        return USAGE
    if args.amount is not None and args.amount < 1:
        print("gateway: orders refund: --amount must be a positive integer (smallest currency unit)", file=sys.stderr)
        return USAGE
    if not settings.stripe_secret_key:
        print("gateway: STRIPE_SECRET_KEY is not set: cannot call Stripe", file=sys.stderr)
        return USAGE
    key = args.idempotency_key or f"cli-{uuid.uuid4()}"
    request_id = support_events.new_request_id("refund")

    async def job(pool: asyncpg.Pool) -> int:
        client = build_stripe_client(settings)
        try:
            answer = await refunds.request_refund(
                pool,
                client,
                settings,
                order_id,
                RefundRequest(args.amount, args.reason),
                idempotency_key=key,
                actor="cli",
                request_id=request_id,
            )
        except ApiError as exc:
            print_json(
                {"error": {"code": exc.code, "message": exc.message, "details": exc.details}, "idempotency_key": key}
            )
            return USAGE if exc.status == 404 else FAILED
        finally:
            await close_stripe_client(client)
        print_json({**answer.body, "idempotency_key": key, "replayed": answer.replayed})
        return OK

    return with_pool(args, settings, job, request_id=request_id)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    orders = sub.add_parser("orders", help="order actions from our side (runbook: refunds)")
    actions = orders.add_subparsers(dest="orders_command", required=True)
    refund = actions.add_parser("refund", help="refund an order in full or in part (Stripe), bounded by what is left")
    refund.add_argument("order_id", metavar="ORDER_ID")
    refund.add_argument("--amount", type=int, help="smallest currency unit; default: everything left to refund")
    refund.add_argument("--reason", choices=REFUND_REASONS, default="requested_by_customer")
    refund.add_argument("--idempotency-key", help="retry a refund that timed out with the key it printed")
    add_database_option(refund)
    refund.set_defaults(func=cmd_orders_refund)
