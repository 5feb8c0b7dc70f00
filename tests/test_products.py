"""GET /v1/products (public, cacheable) and `gateway products import <file>`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway import cli
from gateway.catalog.importer import CatalogFileError, import_products, parse_products
from tests.conftest import BASE_ENV
from tests.factories import create_product
from tests.fakes.stripe_api import FakeStripe
from tests.test_checkout import checkout_app_overrides


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    return await aiohttp_client(app_factory(**checkout_app_overrides(fake_stripe)))


async def test_products_are_public_and_cacheable(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=3, unit_amount=1250)
        gone = await create_product(con, "GONE", stock=0)
        retired = await create_product(con, "OLD")
        await con.execute("UPDATE products SET active = false WHERE id = $1", retired)

    response = await client.get("/v1/products")  # no token
    assert response.status == 200
    body = await response.json()
    assert body == {
        "data": [
            {
                "id": mug,
                "sku": "MUG",
                "name": "Product MUG",
                "unit_amount": 1250,
                "currency": "eur",
                "stock_available": 3,
                "in_stock": True,
            },
            {
                "id": gone,
                "sku": "GONE",
                "name": "Product GONE",
                "unit_amount": 1000,
                "currency": "eur",
                "stock_available": 0,
                "in_stock": False,
            },
        ]
    }
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    etag = response.headers["ETag"]
    assert "RateLimit" in response.headers  # the public policy applies

    again = await client.get("/v1/products", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag

    async with db_pool.acquire() as con:
        await con.execute("UPDATE products SET stock_available = 2 WHERE id = $1", mug)
    changed = await client.get("/v1/products", headers={"If-None-Match": etag})
    assert changed.status == 200
    assert changed.headers["ETag"] != etag


def test_parse_products_reports_every_problem() -> None:
    with pytest.raises(CatalogFileError) as caught:
        parse_products(
            [
                {"sku": "OK-1", "name": "Fine", "unit_amount": 100, "currency": "eur", "stock": 1},
                {"sku": "OK-1", "name": "Twice", "unit_amount": 100, "currency": "eur", "stock": 1},
                {
                    "sku": "bad sku",
                    "name": "",
                    "unit_amount": -1,
                    "currency": "EUR",
                    "stock": "3",
                    "colour": "red",
                },
                "nope",
            ]
        )
    problems = "\n".join(caught.value.problems)
    for expected in (
        "appears twice",
        "sku must be",
        "name must be",
        "unit_amount",
        "currency",
        "stock must be",
        "unknown field 'colour'",
        "product 3: not an object",
    ):
        assert expected in problems
    assert parse_products({"products": []}) == []


async def test_import_upserts_by_sku(db_pool: asyncpg.Pool) -> None:
    rows = parse_products(
        [
            {"sku": "A", "name": "Alpha", "unit_amount": 100, "currency": "eur", "stock": 5},
            {
                "sku": "B",
                "name": "Beta",
                "unit_amount": 200,
                "currency": "eur",
                "stock": 0,
                "active": False,
                "stripe_price_id": "price_123",
            },
        ]
    )
    async with db_pool.acquire() as con:
        first = await import_products(con, rows, source="test")
        second = await import_products(
            con,
            parse_products(
                [
                    {"sku": "A", "name": "Alpha 2", "unit_amount": 150, "currency": "eur", "stock": 7},
                ]
            ),
            source="test",
        )
        products = await con.fetch(
            "SELECT sku, name, unit_amount, stock_available, active, stripe_price_id FROM products ORDER BY sku"
        )
        audits = await con.fetchval("SELECT count(*) FROM audit_log WHERE action = 'products.imported'")
    assert (first.inserted, first.updated) == (2, 0)
    assert (second.inserted, second.updated) == (0, 1)
    assert [tuple(p) for p in products] == [
        ("A", "Alpha 2", 150, 7, True, None),
        ("B", "Beta", 200, 0, False, "price_123"),
    ]
    assert audits == 2


def test_products_import_command(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_ENV_FILE", str(tmp_path / "none.env"))
    good = tmp_path / "catalog.yaml"
    good.write_text("products:\n  - {sku: CLI-1, name: From the CLI, unit_amount: 990, currency: eur, stock: 4}\n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"sku": "CLI-2", "name": "No price", "currency": "eur", "stock": 1}]))

    assert cli.main(["products", "import", str(bad)]) == 1
    assert "unit_amount" in capsys.readouterr().err
    assert cli.main(["products", "import", "--dry-run", str(good)]) == 0
    assert cli.main(["products", "import", str(good)]) == 0
    assert '"inserted": 1' in capsys.readouterr().out  # JSON on stdout (machine-readable)

    async def read() -> Any:
        con = await asyncpg.connect(database_url)
        try:
            return await con.fetchrow("SELECT name, unit_amount, stock_available FROM products WHERE sku = 'CLI-1'")
        finally:
            await con.execute("DELETE FROM products WHERE sku = 'CLI-1'")
            await con.close()

    row = asyncio.run(read())
    assert tuple(row) == ("From the CLI", 990, 4)
