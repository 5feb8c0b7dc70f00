"""The official Stripe SDK's async client, built once from the settings, and how calls back off on Stripe's 429.

Outbound calls to Stripe (checkout sessions, the Events API for `gateway events reconcile` and the watchdog,
webhook endpoints, resyncs) all go through this client; tests point `STRIPE_API_BASE` at the local fake
(tests/fakes/stripe_api.py).

The SDK retries connection errors, 409s and 5xx itself when `max_network_retries` is set, but never a 429 (unless
Stripe adds `Stripe-Should-Retry: true`) and it ignores `Retry-After`: `Backoff.call` is the one place that waits
and tries again on a rate limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe
from aiohttp import web

from gateway import keys, metrics
from gateway.settings import Settings

log = logging.getLogger("gateway.stripe")

T = TypeVar("T")


class StripeNotConfigured(RuntimeError):
    """STRIPE_SECRET_KEY is not set."""


def build_stripe_client(settings: Settings, *, max_network_retries: int | None = None) -> stripe.StripeClient:
    """A StripeClient using aiohttp (async calls: `client.v1.<resource>.<method>_async(...)`).

    Close it with `close_stripe_client` when done.
    """
    if not settings.stripe_secret_key:
        raise StripeNotConfigured("STRIPE_SECRET_KEY is not set")
    return stripe.StripeClient(
        api_key=settings.stripe_secret_key,
        base_addresses={"api": settings.stripe_api_base},
        http_client=stripe.AIOHTTPClient(),
        stripe_version=settings.stripe_api_version,
        max_network_retries=max_network_retries,
    )


async def close_stripe_client(client: stripe.StripeClient) -> None:
    """Close the client's aiohttp session (the SDK has no public close on StripeClient)."""
    http_client = client._requestor._client
    if http_client is not None:
        await http_client.close_async()  # type: ignore[no-untyped-call]


async def stripe_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: `app[keys.STRIPE_CLIENT]` for the app's lifetime. Without a secret key (allowed outside
    production) no client is stored and routes needing Stripe must check `keys.STRIPE_CLIENT in app`."""
    settings = app[keys.SETTINGS]
    if not settings.stripe_secret_key:
        yield
        return
    client = build_stripe_client(settings)
    app[keys.STRIPE_CLIENT] = client
    try:
        yield
    finally:
        await close_stripe_client(client)


def retry_after_seconds(exc: stripe.StripeError) -> float | None:
    """The `Retry-After` header of a Stripe error answer, in seconds (None when absent or not a number)."""
    headers = exc.headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits and tries again when Stripe answers 429: `Retry-After` when Stripe sends it, else 1, 2, 4... seconds;
    at most `attempts` calls, each wait at most `max_delay` seconds. `sleep` is replaceable (tests record waits)."""

    attempts: int = 4
    max_delay: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def call(self, operation: str, request: Callable[[], Awaitable[T]]) -> T:
        attempt = 1
        while True:
            try:
                return await request()
            except stripe.RateLimitError as exc:
                metrics.STRIPE_API_RATE_LIMITED.labels(operation).inc()
                if attempt >= self.attempts:
                    raise
                delay = retry_after_seconds(exc)
                delay = min(self.max_delay, float(2 ** (attempt - 1)) if delay is None else delay)
                log.warning(
                    "Stripe API rate limit (429); waiting before the next attempt",
                    extra={"code": "stripe_rate_limited", "reason": operation, "durationMs": int(delay * 1000)},
                )
                await self.sleep(delay)
                attempt += 1


DEFAULT_BACKOFF = Backoff()


def raw_object(obj: stripe.StripeObject) -> dict[str, Any]:
    """An API object as Stripe sent it (the response's JSON), else the SDK object's data as plain JSON values."""
    response = obj.last_response
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("id") == getattr(obj, "id", None):
        return dict(data)
    return obj.to_dict(for_json=True)
