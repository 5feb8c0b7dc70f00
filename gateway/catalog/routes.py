"""`GET /v1/products`: the active products, public and cacheable (Cache-Control, ETag, 304)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import hdrs, web

from gateway import keys
from gateway.middleware import add_routes
from gateway.routing import route_options

CACHE_SECONDS = 60

LIST_ACTIVE_PRODUCTS = """
SELECT id, sku, name, unit_amount, currency, stock_available
FROM products
WHERE active
ORDER BY id
"""


def product_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sku": row["sku"],
        "name": row["name"],
        "unit_amount": row["unit_amount"],
        "currency": row["currency"],
        "stock_available": row["stock_available"],
        "in_stock": row["stock_available"] > 0,
    }


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
    return "*" in candidates or etag in candidates


@route_options(rate_limit="public", auth="none")
async def list_products(request: web.Request) -> web.Response:
    async with request.app[keys.DB_POOL].acquire() as con:
        rows = await con.fetch(LIST_ACTIVE_PRODUCTS)
    body = orjson.dumps({"data": [product_json(r) for r in rows]})
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": f"public, max-age={CACHE_SECONDS}, stale-while-revalidate={CACHE_SECONDS}",
        "ETag": etag,
    }
    if _etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def register(app: web.Application) -> None:
    add_routes(app, [web.get("/v1/products", list_products, name="products")])
