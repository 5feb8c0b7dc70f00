"""Issue 21, item 6: schemathesis generates requests for every operation of gateway/openapi/openapi.yaml, and
each is made hostile before it is sent (NUL, lone surrogates, digits of other scripts, numbers and dates out of
range, deep nesting, in path parameters, query strings, JSON bodies and the token's subject), against the real
app on the test database. Nothing may answer 5xx, and every error has the JSON shape with the request id.

Bounded: SCHEMATHESIS_HOSTILE_EXAMPLES examples per operation (default 25; about a minute for all of them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet

from gateway.openapi.routes import document
from tests.test_auth_jwt import claims, hs256
from tests.test_openapi import LiveGateway, _seed, live_overrides

EXAMPLES = int(os.environ.get("SCHEMATHESIS_HOSTILE_EXAMPLES", "25"))
SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}

# Values PostgreSQL cannot store, or that only look like numbers and dates.
HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "a\x00b",
            "\x00",
            "\ud800",
            "x\udfffy",
            "²",
            "١٢",
            "1_0",
            "9" * 25,
            "-9223372036854775809",
            "9223372036854775808",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "evt_\x00",
        ]
    ),
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=4),
)
HOSTILE_NUMBER = st.sampled_from([2**63, -(2**63) - 1, 10**15, 10**30, 1e308, -1e308, 0.5])


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_JSON = st.one_of(
    HOSTILE_TEXT, HOSTILE_NUMBER, st.integers(10, 300).map(nested), st.lists(HOSTILE_TEXT, min_size=1, max_size=3)
)
WHERE = st.sampled_from(["path", "query", "body", "subject", "nothing"])
QUERY_NAMES = ("limit", "cursor", "after", "types")


def token(subject: str = "fuzz-user") -> str:
    roles = ["bridge:read", "entitlements:read"]
    return hs256(claims(sub=subject, roles=roles, exp=int(time.time()) + 3600))


def encode(text: str) -> str:
    """Percent-encoding of `text`; a lone surrogate becomes the bytes a careless client would send for it."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def hostile_request(case: Any, where: str, text: str, value: Any) -> dict[str, Any]:
    """The request of `case` with a hostile value put `where`: method, url path and query, headers, body."""
    path_parameters = dict(case.path_parameters or {})
    query = {k: v for k, v in (case.query or {}).items() if isinstance(v, str | int | float)}
    body = None if isinstance(case.body, NotSet) else case.body
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "content-type")}
    headers["Authorization"] = "Bearer " + token()
    if where == "path" and path_parameters:
        path_parameters[sorted(path_parameters)[0]] = text
    elif where == "query":
        query[QUERY_NAMES[len(text) % len(QUERY_NAMES)]] = text
    elif where == "body" and case.media_type == "application/json":
        if isinstance(body, dict) and body:
            body[sorted(body)[0]] = value
        else:
            body = value
    elif where == "subject":
        headers["Authorization"] = "Bearer " + token(text)
    path = case.operation.path
    for name, raw in path_parameters.items():
        path = path.replace("{" + name + "}", encode(str(raw)))
    if query:
        path += "?" + "&".join(f"{encode(str(k))}={encode(str(v))}" for k, v in query.items())
    data: bytes | None = None
    if body is not None and case.media_type == "application/json":
        data = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as "\ud800", a NUL as "\u0000"
        headers["Content-Type"] = "application/json"
    return {"method": case.method.upper(), "path": path, "headers": headers, "data": data}


@pytest.fixture(scope="module")
def live(database_url: str) -> Iterator[LiveGateway]:
    asyncio.run(_seed(database_url))
    with LiveGateway(database_url, **live_overrides()) as gateway:
        yield gateway


def check_answer(response: requests.Response, sent: dict[str, Any]) -> None:
    where = f"{sent['method']} {sent['path'][:200]} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["request_id"] == response.headers["X-Request-ID"], where


@pytest.mark.slow
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_hostile_values_never_get_a_server_error(live: LiveGateway, operation: str) -> None:
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(case=OPERATIONS[operation].as_strategy(), where=WHERE, text=HOSTILE_TEXT, value=HOSTILE_JSON)
    def send(case: Any, where: str, text: str, value: Any) -> None:
        sent = hostile_request(case, where, text, value)
        response = session.request(
            sent["method"], live.base_url + sent["path"], headers=sent["headers"], data=sent["data"], timeout=20
        )
        check_answer(response, sent)

    send()


def test_every_documented_operation_is_fuzzed() -> None:
    documented = {
        f"{method.upper()} {path}"
        for path, item in document()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }
    assert set(OPERATIONS) == documented


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_hostile_request_puts_the_value_where_asked() -> None:
    case = OPERATIONS["GET /v1/users/{user_id}/entitlements"].as_strategy().example()
    assert hostile_request(case, "path", "a\x00b", None)["path"] == "/v1/users/a%00b/entitlements"
    assert hostile_request(case, "path", "\ud800", None)["path"] == "/v1/users/%ED%A0%80/entitlements"
    login = OPERATIONS["POST /v1/auth/login"].as_strategy().example()
    sent = hostile_request(login, "body", "", "\ud800")
    assert b"\\ud800" in sent["data"]
