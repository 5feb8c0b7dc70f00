"""The one place billing calls Stripe: a timeout, Stripe's errors mapped to the API's, idempotency keys.

- a timeout or a Stripe failure that is not about the request (5xx, network, authentication, rate limit):
  502 `stripe_timeout` / `stripe_error`; the caller may retry with the same Idempotency-Key;
- Stripe refused the request itself (4xx invalid request or card error, e.g. an amount above what is left to
  refund, a subscription already canceled): 409 `stripe_rejected` with Stripe's error code and parameter;
- the same idempotency key with other parameters (Stripe's `idempotency_error`): 409 `idempotency_key_reused`.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import stripe

from gateway.errors import BadGateway, Conflict
from gateway.settings import Settings

T = TypeVar("T")

# Stripe answers these for a request it understood and refused (not a failure of Stripe or of the connection).
_REJECTED_STATUSES = frozenset({400, 402, 404})


async def call(settings: Settings, what: str, request: Awaitable[T]) -> T:
    """Await one SDK call (`what`: "refund", "subscription update", ... for the error message)."""
    try:
        async with asyncio.timeout(settings.stripe_timeout_seconds):
            return await request
    except TimeoutError:
        raise BadGateway("The payment provider did not answer in time", code="stripe_timeout") from None
    except stripe.IdempotencyError:
        raise Conflict("This Idempotency-Key was used with another request", code="idempotency_key_reused") from None
    except stripe.StripeError as exc:
        details = {"stripe_code": exc.code, "stripe_status": exc.http_status}
        if isinstance(exc, stripe.InvalidRequestError) and exc.param:
            details["stripe_param"] = exc.param
        if exc.http_status in _REJECTED_STATUSES and isinstance(exc, stripe.InvalidRequestError | stripe.CardError):
            raise Conflict(
                f"The payment provider refused the {what}", code="stripe_rejected", details=details
            ) from None
        raise BadGateway(f"The payment provider failed the {what}", code="stripe_error", details=details) from None


def idempotency_key(action: str, subject: str, client_key: str | None) -> str:
    """Stripe's idempotency key for one mutating call: the client's Idempotency-Key (hashed: Stripe allows 255
    characters) makes a retry send the same key, so Stripe replays its first answer; without one every call is a
    new request."""
    suffix = hashlib.sha256(client_key.encode()).hexdigest()[:40] if client_key else uuid.uuid4().hex
    return f"{action}:{subject}:{suffix}"
