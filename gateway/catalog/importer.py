"""`gateway products import <file>`: upsert products by SKU from a JSON or YAML file, in one transaction.

The file is a list of products, or an object `{"products": [...]}`; each product:
`{sku, name, unit_amount (minor units), currency (ISO, lower case), stock, active?, stripe_price_id?}`.
`stock` becomes the product's `stock_available` (units neither held by a checkout nor sold). Every problem of
the file is reported at once and nothing is written unless the whole file is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml

from gateway.checkout.validation import is_int
from gateway.progress import SILENT, Progress

MAX_PRODUCTS = 10_000
IMPORT_CHUNK = 500  # products per statement (the progress line moves between them)
_FIELDS = frozenset({"sku", "name", "unit_amount", "currency", "stock", "active", "stripe_price_id"})
_CURRENCY = re.compile(r"^[a-z]{3}$")
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

UPSERT_PRODUCTS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::integer[],
                         $7::boolean[])
        AS i(sku, name, unit_amount, currency, stripe_price_id, stock_available, active)
)
INSERT INTO products (sku, name, unit_amount, currency, stripe_price_id, stock_available, active)
SELECT sku, name, unit_amount, currency, stripe_price_id, stock_available, active FROM input
ON CONFLICT (sku) DO UPDATE SET
    name = EXCLUDED.name,
    unit_amount = EXCLUDED.unit_amount,
    currency = EXCLUDED.currency,
    stripe_price_id = EXCLUDED.stripe_price_id,
    stock_available = EXCLUDED.stock_available,
    active = EXCLUDED.active,
    updated_at = now()
RETURNING (xmax = 0) AS inserted
"""

INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, subject_type, subject_id, details)
VALUES ('cli', 'products.imported', 'products', $1, $2)
"""


class CatalogFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ProductRow:
    sku: str
    name: str
    unit_amount: int
    currency: str
    stock: int
    active: bool
    stripe_price_id: str | None


@dataclass(frozen=True, slots=True)
class ImportResult:
    inserted: int
    updated: int


def load_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        return yaml.safe_load(text)
    return orjson.loads(text)


def parse_products(data: Any) -> list[ProductRow]:
    if isinstance(data, dict) and set(data) == {"products"}:
        data = data["products"]
    if not isinstance(data, list):
        raise CatalogFileError(['the file must hold a list of products (or {"products": [...]})'])
    if len(data) > MAX_PRODUCTS:
        raise CatalogFileError([f"at most {MAX_PRODUCTS} products per file"])
    problems: list[str] = []
    rows: list[ProductRow] = []
    seen: set[str] = set()
    for index, raw in enumerate(data):
        where = f"product {index}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: not an object")
            continue
        before = len(problems)
        for key in sorted(set(raw) - _FIELDS):
            problems.append(f"{where}: unknown field {key!r}")
        sku, name = raw.get("sku"), raw.get("name")
        unit_amount, currency, stock_ = raw.get("unit_amount"), raw.get("currency"), raw.get("stock")
        active, price = raw.get("active", True), raw.get("stripe_price_id")
        if not isinstance(sku, str) or not _SKU.match(sku):
            problems.append(f"{where}: sku must be 1-128 letters, digits or ._:-")
        elif sku in seen:
            problems.append(f"{where}: sku {sku!r} appears twice")
        else:
            seen.add(sku)
            where = f"product {sku}"
        if not isinstance(name, str) or not name.strip() or len(name) > 250:
            problems.append(f"{where}: name must be a non-empty string (at most 250 characters)")
        if not is_int(unit_amount) or not 0 <= unit_amount <= 99_999_999:
            problems.append(f"{where}: unit_amount must be an integer of minor units (0..99999999)")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            problems.append(f"{where}: currency must be a lower-case ISO code such as 'eur'")
        if not is_int(stock_) or not 0 <= stock_ <= 2**31 - 1:
            problems.append(f"{where}: stock must be a non-negative integer")
        if not isinstance(active, bool):
            problems.append(f"{where}: active must be true or false")
        if price is not None and (not isinstance(price, str) or not price.startswith("price_")):
            problems.append(f"{where}: stripe_price_id must be a Stripe price id (price_...)")
        if len(problems) == before:
            assert isinstance(sku, str) and isinstance(name, str) and isinstance(currency, str)
            assert is_int(unit_amount) and is_int(stock_) and isinstance(active, bool)
            rows.append(
                ProductRow(
                    sku,
                    name.strip(),
                    unit_amount,
                    currency,
                    stock_,
                    active,
                    price if isinstance(price, str) else None,
                )
            )
    if problems:
        raise CatalogFileError(problems)
    return rows


async def import_products(
    con: asyncpg.Connection, rows: list[ProductRow], *, source: str, progress: Progress = SILENT
) -> ImportResult:
    """Upsert `rows` by SKU and audit the import, in one transaction (statements of IMPORT_CHUNK products)."""
    progress.phase("importing products", len(rows))
    inserted = updated = 0
    async with con.transaction():
        for start in range(0, len(rows), IMPORT_CHUNK):
            chunk = rows[start : start + IMPORT_CHUNK]
            result = await con.fetch(
                UPSERT_PRODUCTS,
                [r.sku for r in chunk],
                [r.name for r in chunk],
                [r.unit_amount for r in chunk],
                [r.currency for r in chunk],
                [r.stripe_price_id for r in chunk],
                [r.stock for r in chunk],
                [r.active for r in chunk],
            )
            new = sum(1 for r in result if r["inserted"])
            inserted, updated = inserted + new, updated + len(result) - new
            progress.advance(len(chunk))
        outcome = ImportResult(inserted=inserted, updated=updated)
        await con.execute(INSERT_AUDIT, source, {"inserted": outcome.inserted, "updated": outcome.updated})
    return outcome
