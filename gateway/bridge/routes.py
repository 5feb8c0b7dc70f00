"""HTTP routes of the bridge area: the bridge reader for other apps and the entitlements endpoints.

- GET /v1/bridge/events?after=<id>&limit=<n>&types=A,B   service token with role `bridge:read`; events in
  commit order after the cursor, with `next_cursor` (pass it back as `after`) and `has_more`.
- GET /v1/me/entitlements                                 user token: the caller's premium state.
- GET /v1/users/{user_id}/entitlements                    service token with role `entitlements:read`.

"""

from __future__ import annotations

from aiohttp import web

from gateway import context, keys
from gateway.bridge import events
from gateway.bridge.registry import registry
from gateway.errors import BadRequest, Unauthorized
from gateway.input_rules import parse_ascii_int
from gateway.middleware import add_routes
from gateway.responses import json_response
from gateway.routing import route_options
from gateway.subscriptions import entitlements

BRIDGE_READ_ROLE = "bridge:read"
ENTITLEMENTS_READ_ROLE = "entitlements:read"
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_USER_ID_LENGTH = 255


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_ascii_int(raw)
    if value is None:
        raise BadRequest(f"`{name}` must be an integer", code="invalid_parameter")
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be between {low} and {high}", code="invalid_parameter")
    return value


def _types_param(request: web.Request) -> list[str] | None:
    raw = request.query.get("types")
    if not raw:
        return None
    types = sorted({part.strip() for part in raw.split(",") if part.strip()})
    unknown = [t for t in types if t not in registry().events]
    if unknown:
        raise BadRequest(f"unknown event types: {', '.join(unknown)[:200]}", code="invalid_parameter")
    return types or None


@route_options(auth="role", role=BRIDGE_READ_ROLE)
async def list_bridge_events(request: web.Request) -> web.Response:
    after = _int_param(request, "after", 0, 0, 2**63 - 1)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    types = _types_param(request)
    async with request.app[keys.DB_POOL].acquire() as con:
        rows = await events.page(con, after, limit + 1, types)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        {
            "events": [row.as_json() for row in rows],
            "next_cursor": rows[-1].id if rows else after,
            "has_more": has_more,
        }
    )


async def _entitlements(request: web.Request, user_id: str) -> web.Response:
    async with request.app[keys.DB_POOL].acquire() as con:
        result = await entitlements.for_user(con, user_id)
    return json_response({"user_id": user_id, **result.as_json()})


@route_options(auth="user")
async def my_entitlements(request: web.Request) -> web.Response:
    user_id = context.get_context(request).user_id
    if not user_id:
        raise Unauthorized("Authentication required")
    return await _entitlements(request, user_id)


@route_options(auth="role", role=ENTITLEMENTS_READ_ROLE)
async def user_entitlements(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        raise BadRequest("invalid user id", code="invalid_parameter")
    return await _entitlements(request, user_id)


def register(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.get("/v1/bridge/events", list_bridge_events, name="bridge_events"),
            web.get("/v1/me/entitlements", my_entitlements, name="my_entitlements"),
            web.get("/v1/users/{user_id}/entitlements", user_entitlements, name="user_entitlements"),
        ],
    )
