"""A unit of work: who makes a business change and on behalf of which Stripe event, with the audit rows and bridge
events it writes in the caller's transaction.

The handlers write order, payment, stock and subscription rows themselves (gateway/orders/queries.py,
gateway/stock.py); every change also writes an audit row (`audit`) and, when other apps must hear of it, a bridge
event (`publish`, through the one publish function of gateway/bridge/outbox.py). Everything commits or rolls back
with the delivery's transaction (gateway/webhooks/ledger.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from gateway.bridge import outbox

INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
VALUES ($1, $2, $3, $4, $5::uuid, $6, $7, $8)
"""


@dataclass
class UnitOfWork:
    con: asyncpg.Connection
    actor: str
    source_event_id: str  # the Stripe event id
    request_id: str | None
    app_source: str = "website"
    published: list[str] = field(default_factory=list)  # "<id>:<type>" of bridge rows written, announced once committed

    def for_event(self, event_id: str) -> UnitOfWork:
        """The same transaction, on behalf of another Stripe event (a kept event applied with this one)."""
        return UnitOfWork(self.con, self.actor, event_id, self.request_id, self.app_source, self.published)

    async def audit(
        self, action: str, subject_type: str, subject_id: str, *, order_id: str | None = None, **details: Any
    ) -> None:
        await self.con.execute(
            INSERT_AUDIT,
            self.actor,
            action,
            subject_type,
            subject_id,
            order_id,
            self.source_event_id,
            self.request_id,
            details,
        )

    async def publish(self, event_type: str, user_id: str | None, payload: dict[str, Any]) -> None:
        written = await outbox.publish(
            self.con,
            event_type=event_type,
            user_id=user_id,
            payload=payload,
            source_event_id=self.source_event_id,
            app_source=self.app_source,
        )
        if written is not None:
            self.published.append(written)
