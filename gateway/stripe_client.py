"""The official Stripe SDK's async client, built once from the settings.

Outbound calls to Stripe (checkout sessions, the Events API for `gateway events reconcile`) all go through
this client; tests point `STRIPE_API_BASE` at the local fake (tests/fakes/stripe_api.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import stripe
from aiohttp import web

from gateway import keys
from gateway.settings import Settings


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
