"""The dispatch table: Stripe event type -> handler. Any other type is recorded as ignored."""

from __future__ import annotations

from gateway.webhooks.handlers import orders, subscriptions
from gateway.webhooks.handlers.base import Handler, Outcome

HANDLERS: dict[str, Handler] = {
    **orders.HANDLERS,
    **subscriptions.HANDLERS,
}

__all__ = ["HANDLERS", "Handler", "Outcome"]
