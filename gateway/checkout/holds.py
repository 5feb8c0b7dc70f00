"""Bounds on the stock checkouts may hold without paying (issue 21).

Held stock is taken from everybody else until it is paid or released, so a checkout may only hold so much:

- a user's new checkout first releases that user's older open checkouts holding any of the same products (the
  older order stays `pending`: if its Stripe session is paid after all, the payment takes the stock again,
  as a payment after the sweeper's release does);
- then, counting what is still held (reservations `held` and not expired): at most
  CHECKOUT_MAX_OPEN_SESSIONS_PER_USER open checkouts and CHECKOUT_MAX_HELD_UNITS_PER_USER units per user, and
  CHECKOUT_MAX_HELD_UNITS_PER_ADDRESS units per client address (IPv6 by /64) whatever the user, so several
  tokens from one address cannot hoard either. Beyond a bound: 409 `hold_limit_reached`.

How long a hold lasts is RESERVATION_TTL_SECONDS, which is also the Stripe session's expiry (Stripe takes 30
minutes to 24 hours), so stock is never released while its session can still be paid.

Runs inside the checkout's reserve transaction, before the products are locked. Transaction-scoped advisory
locks on the user, then on the address, serialise concurrent checkouts of one user or one address, so two of
them cannot both pass a bound they exceed together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from gateway import stock
from gateway.errors import Conflict
from gateway.settings import Settings

LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended('checkout-holds-user:' || $1, 0))"
LOCK_CLIENT = "SELECT pg_advisory_xact_lock(hashtextextended('checkout-holds-client:' || $1, 0))"

# The user's pending orders holding any of the products, locked in id order (the webhook handlers' order: the
# order row, then its reservations, then products).
LOCK_SUPERSEDED = """
SELECT o.id::text
FROM orders o
WHERE o.user_id = $1
  AND o.status = 'pending'
  AND EXISTS (
      SELECT 1 FROM stock_reservations r
      WHERE r.order_id = o.id AND r.state = 'held' AND r.product_id = ANY($2::bigint[])
  )
ORDER BY o.id
FOR UPDATE
"""

USER_HOLDS = """
SELECT count(DISTINCT r.order_id) AS sessions, coalesce(sum(r.quantity), 0) AS units
FROM orders o JOIN stock_reservations r ON r.order_id = o.id
WHERE o.user_id = $1 AND o.status = 'pending' AND r.state = 'held' AND r.expires_at > now()
"""

CLIENT_HOLDS = """
SELECT coalesce(sum(r.quantity), 0)
FROM orders o JOIN stock_reservations r ON r.order_id = o.id
WHERE o.checkout_client = $1 AND o.status = 'pending' AND r.state = 'held' AND r.expires_at > now()
"""

SUPERSEDED_REASON = "superseded_by_new_checkout"


def client_key(rate_limit_key: str) -> str:
    """What an order records of the client address it came from: a hash, never the address."""
    return hashlib.sha256(rate_limit_key.encode()).hexdigest()[:32]


def _limit_reached(message: str, bound: str, limit: int) -> Conflict:
    return Conflict(message, code="hold_limit_reached", details={"bound": bound, "limit": limit})


async def bound_holds(
    con: asyncpg.Connection,
    settings: Settings,
    user_id: str,
    client: str,
    product_ids: Sequence[int],
    units: int,
) -> dict[str, int]:
    """Release the user's superseded holds, then check the bounds for `units` more; return the orders whose
    holds were released, with how many reservations each released.

    Call inside the reserve transaction. Raises Conflict (409 `hold_limit_reached`) beyond a bound.
    """
    await con.execute(LOCK_USER, user_id)
    await con.execute(LOCK_CLIENT, client)
    superseded = {
        row[0]: await stock.release_for_order(con, row[0], SUPERSEDED_REASON)
        for row in await con.fetch(LOCK_SUPERSEDED, user_id, list(product_ids))
    }

    held = await con.fetchrow(USER_HOLDS, user_id)
    if held["sessions"] + 1 > settings.checkout_max_open_sessions_per_user:
        raise _limit_reached(
            "Too many open checkouts; pay or abandon one first",
            "open_sessions_per_user",
            settings.checkout_max_open_sessions_per_user,
        )
    if held["units"] + units > settings.checkout_max_held_units_per_user:
        raise _limit_reached(
            "Your open checkouts hold too many units",
            "units_per_user",
            settings.checkout_max_held_units_per_user,
        )
    client_units: int = await con.fetchval(CLIENT_HOLDS, client)
    if client_units + units > settings.checkout_max_held_units_per_address:
        raise _limit_reached(
            "Open checkouts from this address hold too many units",
            "units_per_address",
            settings.checkout_max_held_units_per_address,
        )
    return superseded
