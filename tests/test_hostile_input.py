"""Issue 21, item 1 and the token items of 5: nothing a client sends reaches PostgreSQL unstorable (422 with the
JSON error shape and the request id, never a 500), and hostile tokens are a 401 with an INFO line."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import DummyCookieJar

from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.test_accounts import LOGIN, local_overrides, login, make_user
from tests.test_auth_jwt import claims, hs256
from tests.test_checkout import bearer, checkout_app_overrides, error_of


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    app = app_factory(
        **local_overrides(**checkout_app_overrides(fake_stripe)), PLANS_FILE="tests/fixtures/plans-test.yaml"
    )
    return await aiohttp_client(app, cookie_jar=DummyCookieJar())


def cursor(created: str, order_id: str = "00000000-0000-4000-8000-000000000000") -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created, order_id])).decode().rstrip("=")


async def unstorable(response: Any, problem: str) -> None:
    error = await error_of(response, 422, "unstorable_input")
    assert {"problem": problem}.items() <= error["details"][0].items(), error


# ------------------------------------------------------------------ text PostgreSQL cannot store


async def test_a_nul_in_the_login_email_is_422_before_any_query(client: Any, db_pool: asyncpg.Pool) -> None:
    await make_user(db_pool)
    response = await client.post(LOGIN, json={"email": "ada\x00@example.com", "password": "x"})
    await unstorable(response, "nul_character")


async def test_a_nul_in_a_path_parameter_is_422(client: Any) -> None:
    service = {"Authorization": "Bearer " + hs256(claims(sub="svc", roles=["entitlements:read"]))}
    response = await client.get("/v1/users/a%00b/entitlements", headers=service)
    await unstorable(response, "nul_character")
    # the same parameter without the NUL is an ordinary answer
    assert (await client.get("/v1/users/ab/entitlements", headers=service)).status == 200


async def test_a_nul_in_a_query_value_is_422(client: Any) -> None:
    response = await client.get("/v1/orders?cursor=a%00", headers=bearer("alice"))
    await unstorable(response, "nul_character")


async def test_a_nul_in_the_tokens_subject_is_422(client: Any) -> None:
    response = await client.get("/v1/orders", headers={"Authorization": "Bearer " + hs256(claims(sub="al\x00ice"))})
    await unstorable(response, "nul_character")


async def test_a_lone_surrogate_in_a_json_body_is_refused(client: Any) -> None:
    # orjson refuses the escape itself: 400 invalid_json, never a 500
    response = await client.post(
        LOGIN, data=b'{"email": "\\ud800@example.com", "password": "x"}', headers={"Content-Type": "application/json"}
    )
    await error_of(response, 400, "invalid_json")


# ------------------------------------------------------------------ numbers and dates out of range


@pytest.mark.parametrize("limit", ["²", "١٢", "1_0", "99999999999999999999999"])
async def test_an_order_list_limit_of_other_digits_is_422(client: Any, limit: str) -> None:
    response = await client.get("/v1/orders", params={"limit": limit}, headers=bearer("alice"))
    error = await error_of(response, 422, "validation_failed")
    assert error["details"] == [{"field": "limit", "problem": "an integer from 1 to 100"}]


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_cursor_with_an_impossible_timestamp_is_422(client: Any, created: str) -> None:
    response = await client.get("/v1/orders", params={"cursor": cursor(created)}, headers=bearer("alice"))
    error = await error_of(response, 422, "validation_failed")
    assert error["details"] == [{"field": "cursor", "problem": "not a cursor this API returned"}]


async def test_a_good_cursor_still_pages(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con)
        for _ in range(3):
            await create_order(con, [(product, 1)], user_id="alice")
    first = await (await client.get("/v1/orders", params={"limit": "2"}, headers=bearer("alice"))).json()
    second = await client.get("/v1/orders", params={"cursor": first["next_cursor"]}, headers=bearer("alice"))
    assert second.status == 200
    assert len((await second.json())["data"]) == 1


# ------------------------------------------------------------------ tokens (item 5)


async def test_a_numeric_string_exp_is_refused(client: Any) -> None:
    token = hs256(claims(exp="9999999999"))
    response = await client.get("/v1/orders", headers={"Authorization": "Bearer " + token})
    await error_of(response, 401, "invalid_token")
    for name in ("nbf", "iat"):
        token = hs256(claims(**{name: "1700000000"}))
        response = await client.get("/v1/orders", headers={"Authorization": "Bearer " + token})
        await error_of(response, 401, "invalid_token")


async def raw_get(client: Any, path: str, header_lines: bytes) -> tuple[int, dict[str, Any]]:
    """One request written byte for byte (the test client would not send bytes that are not UTF-8)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
        writer.write(header_lines + b"\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


async def test_an_undecodable_token_is_a_401_with_an_info_line(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    good = hs256(claims()).encode()
    for token in (good[:10] + b"\xe9" + good[10:], b"\xff\xfe", "abc.déf.ghi".encode()):
        caplog.clear()
        status, body = await raw_get(client, "/v1/orders", b"Authorization: Bearer " + token + b"\r\n")
        assert (status, body["error"]["code"]) == (401, "invalid_token"), body
        auth_lines = [r for r in caplog.records if r.name == "gateway.auth"]
        assert [(r.levelno, r.getMessage()) for r in auth_lines] == [(logging.INFO, "bearer token rejected")]
        assert all(r.exc_info is None for r in caplog.records)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_local_accounts_have_their_own_subject_namespace(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    user_id = await make_user(db_pool)
    token = (await (await login(client)).json())["access_token"]
    async with db_pool.acquire() as con:
        product = await create_product(con)
        mine = await create_order(con, [(product, 1)], user_id=f"local:{user_id}")
        idp_users = await create_order(con, [(product, 1)], user_id=user_id)  # an IdP user whose sub is the uuid
    local = {"Authorization": "Bearer " + token}
    assert (await client.get(f"/v1/orders/{mine}", headers=local)).status == 200
    await error_of(await client.get(f"/v1/orders/{idp_users}", headers=local), 404, "order_not_found")
    # the identity provider cannot mint a user of the local namespace
    forged = {"Authorization": "Bearer " + hs256(claims(sub=f"local:{user_id}"))}
    await error_of(await client.get(f"/v1/orders/{mine}", headers=forged), 401, "invalid_token")
    # the identity provider's user with the bare uuid is somebody else
    assert (await client.get(f"/v1/orders/{idp_users}", headers=bearer(user_id))).status == 200
    await error_of(await client.get(f"/v1/orders/{mine}", headers=bearer(user_id)), 404, "order_not_found")


async def test_a_refresh_cookie_that_is_not_ascii_is_refused_without_a_500(client: Any) -> None:
    for path in ("/v1/auth/refresh", "/v1/auth/logout"):
        status, body = await raw_post(client, path, b"Cookie: gateway_refresh=ab\xff\xfe\r\n")
        assert status in (401, 204), body
        if status == 401:
            assert body["error"]["code"] == "refresh_token_missing"


async def raw_post(client: Any, path: str, header_lines: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
        writer.write(b"Content-Length: 0\r\n" + header_lines + b"\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body) if body else {}
