"""Issue 21, item 3: stock holds are bounded. Per user (units, open checkouts), per client address (whatever the
user), and a user's new checkout releases that user's older holds of the same products. Two users racing for the
last units: one gets them, the other a 409, stock never negative."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.factories import create_product
from tests.fakes.stripe_api import FakeStripe
from tests.test_checkout import CHECKOUT, bearer, checkout_app_overrides, error_of, held_units, stock_of


def holds_overrides(fake: FakeStripe, **more: Any) -> dict[str, Any]:
    return checkout_app_overrides(
        fake,
        TRUSTED_PROXIES="127.0.0.1/32,::1/128",
        CHECKOUT_MAX_HELD_UNITS_PER_USER=3,
        CHECKOUT_MAX_OPEN_SESSIONS_PER_USER=2,
        CHECKOUT_MAX_HELD_UNITS_PER_ADDRESS=5,
        **more,
    )


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    return await aiohttp_client(app_factory(**holds_overrides(fake_stripe)))


async def checkout(client: Any, user: str, *lines: tuple[int, int], address: str = "198.51.100.1") -> Any:
    body = {"items": [{"product_id": product, "quantity": quantity} for product, quantity in lines]}
    return await client.post(CHECKOUT, json=body, headers={**bearer(user), "X-Forwarded-For": address})


async def held_by(pool: asyncpg.Pool, user: str) -> int:
    async with pool.acquire() as con:
        value: int = await con.fetchval(
            """SELECT coalesce(sum(r.quantity), 0) FROM stock_reservations r JOIN orders o ON o.id = r.order_id
               WHERE o.user_id = $1 AND r.state = 'held'""",
            user,
        )
    return value


async def test_two_users_racing_for_the_last_units(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=4)
        tee = await create_product(con, "TEE", stock=10)
    first, second = await asyncio.gather(
        checkout(client, "alice", (mug, 3), address="198.51.100.1"),
        checkout(client, "bob", (mug, 3), address="203.0.113.1"),
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [201, 409], [await first.text(), await second.text()]
    loser, winner = ("alice", "bob") if first.status == 409 else ("bob", "alice")
    refused = first if first.status == 409 else second
    error = await error_of(refused, 409, "out_of_stock")
    assert error["details"]["products"][0]["available"] == 1
    assert await stock_of(db_pool, mug) == 1
    # the loser takes the last unit; the winner cannot hoard more than their bound (3 units) elsewhere
    assert (await checkout(client, loser, (mug, 1), address="192.0.2.9")).status == 201
    hoard = await checkout(client, winner, (tee, 1), address="192.0.2.10")
    error = await error_of(hoard, 409, "hold_limit_reached")
    assert error["details"] == {"bound": "units_per_user", "limit": 3}
    assert await stock_of(db_pool, mug) == 0
    assert await held_units(db_pool) == 4
    assert await stock_of(db_pool, tee) == 10


async def test_one_checkout_cannot_hold_more_than_the_users_bound(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=100)
    error = await error_of(await checkout(client, "alice", (mug, 4)), 409, "hold_limit_reached")
    assert error["details"] == {"bound": "units_per_user", "limit": 3}
    assert await stock_of(db_pool, mug) == 100
    assert (await checkout(client, "bob", (mug, 3), address="203.0.113.7")).status == 201


async def test_open_checkouts_per_user_are_bounded(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        products = [await create_product(con, f"P{n}", stock=10) for n in range(3)]
    assert (await checkout(client, "alice", (products[0], 1))).status == 201
    assert (await checkout(client, "alice", (products[1], 1))).status == 201
    error = await error_of(await checkout(client, "alice", (products[2], 1)), 409, "hold_limit_reached")
    assert error["details"] == {"bound": "open_sessions_per_user", "limit": 2}


async def test_many_user_tokens_from_one_address_cannot_hoard(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=1000)
    statuses = [(await checkout(client, f"sock-{n}", (mug, 2), address="198.51.100.66")).status for n in range(3)]
    assert statuses == [201, 201, 409]  # 5 units per address: the third would make 6
    assert await held_units(db_pool) == 4
    # IPv6 clients are one address per /64
    assert (await checkout(client, "v6-a", (mug, 3), address="2001:db8::1")).status == 201
    error = await error_of(await checkout(client, "v6-b", (mug, 3), address="2001:db8::2"), 409, "hold_limit_reached")
    assert error["details"] == {"bound": "units_per_address", "limit": 5}
    # somebody else, elsewhere, still buys
    assert (await checkout(client, "carol", (mug, 3), address="192.0.2.44")).status == 201


async def test_a_new_checkout_releases_the_users_older_holds_of_the_same_product(
    client: Any, db_pool: asyncpg.Pool
) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=10)
        tee = await create_product(con, "TEE", stock=10)
    first = await checkout(client, "alice", (mug, 2))
    other = await checkout(client, "alice", (tee, 1))
    assert (first.status, other.status) == (201, 201)
    second = await checkout(client, "alice", (mug, 1))  # changed her mind: one mug
    assert second.status == 201, await second.text()
    assert await stock_of(db_pool, mug) == 9
    assert await stock_of(db_pool, tee) == 9  # the other product's checkout is untouched
    assert await held_by(db_pool, "alice") == 2
    async with db_pool.acquire() as con:
        old = await con.fetchrow(
            "SELECT o.status, r.state, r.release_reason FROM orders o JOIN stock_reservations r ON r.order_id = o.id"
            " WHERE o.id = $1::uuid",
            (await first.json())["order_id"],
        )
    # the older order stays pending: if its session is paid after all, the payment takes the stock again
    assert dict(old) == {"status": "pending", "state": "released", "release_reason": "superseded_by_new_checkout"}


async def test_a_refused_checkout_releases_nothing(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=10)
    assert (await checkout(client, "alice", (mug, 2))).status == 201
    await error_of(await checkout(client, "alice", (mug, 4)), 409, "hold_limit_reached")
    assert await held_by(db_pool, "alice") == 2  # the older hold is kept: the refusal rolled its release back
