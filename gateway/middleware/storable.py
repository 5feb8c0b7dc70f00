"""Refuse, before any query, a request whose path parameters or query string hold text PostgreSQL cannot store
(NUL, lone surrogates: `gateway.input_rules`). JSON bodies get the same rule where they are read
(`checkout.validation.read_json_object`), the token's subject in the auth layer."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import ValidationFailed
from gateway.input_rules import UNSTORABLE_CODE, text_problem


def _problems(request: web.Request) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    for name, value in request.match_info.items():
        problem = text_problem(value)
        if problem is not None:
            problems.append({"field": name, "problem": problem})
    for name, value in request.query.items():
        problem = text_problem(name) or text_problem(value)
        if problem is not None:
            problems.append({"field": name if text_problem(name) is None else "?", "problem": problem})
    return problems


def storable_input_middleware() -> Middleware:
    @web.middleware
    async def storable_input(request: web.Request, handler: Handler) -> web.StreamResponse:
        problems = _problems(request)
        if problems:
            raise ValidationFailed(
                "The request holds a value that cannot be stored", code=UNSTORABLE_CODE, details=problems
            )
        return await handler(request)

    return storable_input
