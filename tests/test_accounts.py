"""Local accounts: login (argon2id, same answer for an unknown account), rotating refresh cookies with reuse
detection, logout, cookie flags by environment, login limiting per IP and per account, and the gateway's own
tokens accepted beside the identity provider's (shared secret and JWKS)."""

from __future__ import annotations

import hashlib
import io
from http.cookies import SimpleCookie
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp import DummyCookieJar
from prometheus_client import REGISTRY

from gateway import cli
from gateway.accounts import passwords, store
from gateway.accounts.routes import REFRESH_COOKIE
from tests.conftest import BASE_ENV
from tests.test_auth_jwt import JwksServer, claims, hs256, rs256
from tests.test_auth_jwt import jwks_server as jwks_server
from tests.test_checkout import error_of

LOGIN, REFRESH, LOGOUT = "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout"
LOCAL_KEY = "local-signing-key-" + "k" * 32
PASSWORD = "correct horse battery staple"


def local_overrides(**more: Any) -> dict[str, Any]:
    return {
        "AUTH_LOCAL_ENABLED": "true",
        "AUTH_LOCAL_JWT_SECRET": LOCAL_KEY,
        "AUTH_COOKIE_SECURE": "false",
        "RATE_LIMIT_AUTH_MAX": 1000,
        "RATE_LIMIT_PUBLIC_MAX": 1000,
        **more,
    }


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory(**local_overrides()), cookie_jar=DummyCookieJar())


async def make_user(pool: asyncpg.Pool, email: str = "ada@example.com", *, roles: list[str] | None = None) -> str:
    async with pool.acquire() as con:
        return await store.create_user(con, email, passwords.hash_password_sync(PASSWORD), roles or [])


def refresh_cookie(response: Any) -> Any:
    """The refresh cookie's Morsel from a response's Set-Cookie headers."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar[REFRESH_COOKIE]


def with_cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{REFRESH_COOKIE}={token}"}


async def login(client: Any, email: str = "ada@example.com", password: str = PASSWORD, **headers: str) -> Any:
    return await client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


# ------------------------------------------------------------------ login


async def test_login_returns_an_access_token_and_a_scoped_refresh_cookie(client: Any, db_pool: asyncpg.Pool) -> None:
    user_id = await make_user(db_pool, roles=["support"])
    response = await login(client, email="  Ada@Example.com ")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"

    token_claims = jwt.decode(body["access_token"], LOCAL_KEY, algorithms=["HS256"], audience="stripe-gateway")
    assert token_claims["iss"] == "stripe-gateway"
    assert token_claims["sub"] == "local:" + user_id  # local accounts have their own subject namespace
    assert token_claims["roles"] == ["support"]
    assert token_claims["exp"] - token_claims["iat"] == 900

    cookie = refresh_cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/v1/auth"
    assert not cookie["secure"]  # AUTH_COOKIE_SECURE=false (development)
    assert int(cookie["max-age"]) == 1_209_600

    # Only a hash of the refresh token is stored.
    async with db_pool.acquire() as con:
        rows = await con.fetch("SELECT * FROM refresh_tokens")
    assert len(rows) == 1
    assert bytes(rows[0]["token_hash"]) == hashlib.sha256(cookie.value.encode()).digest()
    assert all(cookie.value not in str(value) for value in rows[0].values())

    # The gateway's own token opens the API.
    orders = await client.get("/v1/orders", headers={"Authorization": "Bearer " + body["access_token"]})
    assert orders.status == 200, await orders.text()


async def test_unknown_account_and_wrong_password_get_the_same_answer_and_work(
    client: Any, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_user(db_pool)
    checked: list[str] = []
    real = passwords._HASHER

    class Spy:
        def verify(self, stored: str, password: str) -> bool:
            checked.append(stored)
            return real.verify(stored, password)

        def check_needs_rehash(self, stored: str) -> bool:
            return real.check_needs_rehash(stored)

    monkeypatch.setattr(passwords, "_HASHER", Spy())

    wrong = await login(client, password="not the password")
    unknown = await login(client, email="nobody@example.com")
    disabled_body: dict[str, Any] = {}
    for response in (wrong, unknown):
        error = await error_of(response, 401, "invalid_credentials")
        error.pop("request_id")
        disabled_body = disabled_body or error
        assert error == disabled_body
        assert response.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
        assert REFRESH_COOKIE not in response.cookies
    # Both paths ran one argon2id verification (the unknown account against the dummy hash, same parameters).
    assert len(checked) == 2
    assert checked[1].startswith("$argon2id$") and checked[1].split("$")[3] == checked[0].split("$")[3]


async def test_disabled_account_cannot_log_in(client: Any, db_pool: asyncpg.Pool) -> None:
    user_id = await make_user(db_pool)
    async with db_pool.acquire() as con:
        await con.execute("UPDATE users SET disabled_at = now() WHERE id = $1::uuid", user_id)
    await error_of(await login(client), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@b.c"},
        {"email": "a@b.c", "password": "x", "remember": True},
        {"email": 3, "password": "x"},
        {"email": "a@b.c", "password": "x" * 1025},
    ],
)
async def test_login_body_is_validated(client: Any, body: dict[str, Any]) -> None:
    await error_of(await client.post(LOGIN, json=body), 422, "validation_failed")


# ------------------------------------------------------------------ refresh rotation


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(client: Any, db_pool: asyncpg.Pool) -> None:
    await make_user(db_pool)
    first = refresh_cookie(await login(client)).value

    rotated = await client.post(REFRESH, headers=with_cookie(first))
    assert rotated.status == 200, await rotated.text()
    second = refresh_cookie(rotated).value
    assert second != first
    assert (await rotated.json())["access_token"]

    third_response = await client.post(REFRESH, headers=with_cookie(second))
    assert third_response.status == 200
    third = refresh_cookie(third_response).value

    # The first token was already rotated: replaying it is theft. The whole family dies.
    replay = await client.post(REFRESH, headers=with_cookie(first))
    await error_of(replay, 401, "refresh_token_reused")
    assert refresh_cookie(replay)["max-age"] == "0"
    legit = await client.post(REFRESH, headers=with_cookie(third))
    await error_of(legit, 401, "refresh_token_invalid")

    async with db_pool.acquire() as con:
        states = await con.fetch("SELECT revoked_at IS NOT NULL AS revoked, revoke_reason FROM refresh_tokens")
        audit = await con.fetchval("SELECT count(*) FROM audit_log WHERE action = 'auth.refresh_reuse_detected'")
    assert all(s["revoked"] for s in states) and len(states) == 3
    assert {s["revoke_reason"] for s in states} == {"reuse_detected"}
    assert audit == 1


async def test_refresh_without_or_with_a_bogus_cookie_is_401(client: Any) -> None:
    await error_of(await client.post(REFRESH), 401, "refresh_token_missing")
    await error_of(await client.post(REFRESH, headers=with_cookie("made-up")), 401, "refresh_token_invalid")


async def test_expired_refresh_token_is_refused(client: Any, db_pool: asyncpg.Pool) -> None:
    await make_user(db_pool)
    token = refresh_cookie(await login(client)).value
    async with db_pool.acquire() as con:
        await con.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    await error_of(await client.post(REFRESH, headers=with_cookie(token)), 401, "refresh_token_invalid")


async def test_logout_revokes_and_clears_the_cookie(client: Any, db_pool: asyncpg.Pool) -> None:
    await make_user(db_pool)
    token = refresh_cookie(await login(client)).value
    response = await client.post(LOGOUT, headers=with_cookie(token))
    assert response.status == 204
    cleared = refresh_cookie(response)
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/v1/auth"
    await error_of(await client.post(REFRESH, headers=with_cookie(token)), 401, "refresh_token_invalid")
    assert (await client.post(LOGOUT)).status == 204  # no session: still fine


# ------------------------------------------------------------------ cookie flags by environment


async def test_cookie_is_secure_in_production(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, database_url: str
) -> None:
    app = app_factory(
        **local_overrides(
            APP_ENV="production",
            AUTH_COOKIE_SECURE="true",
            DATABASE_URL=database_url,
            CORS_ORIGINS="https://shop.example",
        )
    )
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    await make_user(db_pool)
    cookie = refresh_cookie(await login(client))
    assert cookie["secure"] is True
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax" and cookie["path"] == "/v1/auth"
    token = cookie.value
    rotated = refresh_cookie(await client.post(REFRESH, headers=with_cookie(token)))
    assert rotated["secure"] is True
    cleared = refresh_cookie(await client.post(LOGOUT, headers=with_cookie(rotated.value)))
    assert cleared["secure"] is True


# ------------------------------------------------------------------ limiting


async def test_login_is_limited_per_ip(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> None:
    client = await aiohttp_client(app_factory(**local_overrides(RATE_LIMIT_AUTH_MAX=3)), cookie_jar=DummyCookieJar())
    await make_user(db_pool)
    statuses = [(await login(client, email=f"u{n}@example.com")).status for n in range(4)]
    assert statuses == [401, 401, 401, 429]
    limited = await login(client)
    await error_of(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


async def test_login_is_limited_per_account_across_ips(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    client = await aiohttp_client(
        app_factory(**local_overrides(RATE_LIMIT_AUTH_ACCOUNT_MAX=3, TRUSTED_PROXIES="127.0.0.1/32,::1/128")),
        cookie_jar=DummyCookieJar(),
    )
    await make_user(db_pool)
    statuses = []
    for n in range(4):
        response = await login(client, password="guess", **{"X-Forwarded-For": f"203.0.113.{n + 1}"})
        statuses.append(response.status)
    assert statuses == [401, 401, 401, 429]
    # Another account from a fresh address is not affected.
    other = await login(client, email="other@example.com", **{"X-Forwarded-For": "203.0.113.99"})
    assert other.status == 401


async def test_a_stranger_cannot_lock_the_owner_out(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    """Wrong passwords from one address exhaust that address's bucket for the account, not the account."""
    client = await aiohttp_client(
        app_factory(
            **local_overrides(RATE_LIMIT_AUTH_MAX=3, RATE_LIMIT_AUTH_ACCOUNT_MAX=10, TRUSTED_PROXIES="127.0.0.1/32")
        ),
        cookie_jar=DummyCookieJar(),
    )
    await make_user(db_pool)
    before = {reason: sample("auth_login_failures_total", reason=reason) for reason in REASONS}
    stranger = {"X-Forwarded-For": "198.51.100.7"}
    statuses = [(await login(client, password="guess", **stranger)).status for _ in range(3)]
    limited = await login(client, password="guess", **stranger)
    assert statuses == [401, 401, 401]
    await error_of(limited, 429, "rate_limited")
    # the owner, from their own address, still logs in
    owner = await login(client, **{"X-Forwarded-For": "192.0.2.10"})
    assert owner.status == 200, await owner.text()
    # failed attempts are counted by reason
    await login(client, email="nobody@example.com", **{"X-Forwarded-For": "192.0.2.11"})
    await login(client, email="not-an-email", **{"X-Forwarded-For": "192.0.2.12"})
    after = {reason: sample("auth_login_failures_total", reason=reason) for reason in REASONS}
    assert {reason: after[reason] - before[reason] for reason in REASONS} == {
        "wrong_password": 3,
        "limited_account_address": 0,  # the route's per-address bucket (same size) refused the 4th first
        "unknown_account": 1,
        "invalid_request": 1,
        "limited_account": 0,
        "disabled_account": 0,
    }
    # only many addresses together reach the per-account bound (10 a minute here)
    for n in range(6):
        await login(client, password="guess", **{"X-Forwarded-For": f"203.0.113.{n + 1}"})
    await error_of(await login(client, **{"X-Forwarded-For": "192.0.2.10"}), 429, "rate_limited")
    assert sample("auth_login_failures_total", reason="limited_account") - before["limited_account"] == 1


REASONS = (
    "wrong_password",
    "limited_account_address",
    "unknown_account",
    "invalid_request",
    "limited_account",
    "disabled_account",
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------ tokens side by side


async def test_gateway_and_identity_provider_tokens_are_accepted_side_by_side(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, jwks_server: JwksServer
) -> None:
    app = app_factory(**local_overrides(JWT_ALGORITHMS="HS256,RS256", JWT_JWKS_URL=jwks_server.url))
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    await make_user(db_pool)
    local = (await (await login(client)).json())["access_token"]
    for token in (local, hs256(claims(sub="idp-user")), rs256(claims(sub="idp-user"))):
        response = await client.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200, await response.text()

    forged = jwt.encode(
        {**jwt.decode(local, options={"verify_signature": False}), "sub": "someone-else"},
        "another-key-" + "z" * 32,
        algorithm="HS256",
    )
    wrong_use = jwt.encode(
        {**jwt.decode(local, options={"verify_signature": False}), "token_use": "refresh"},
        LOCAL_KEY,
        algorithm="HS256",
    )
    idp_key_with_local_issuer = hs256(claims(iss="stripe-gateway", aud="stripe-gateway"))
    for token in (forged, wrong_use, idp_key_with_local_issuer):
        response = await client.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        await error_of(response, 401, "invalid_token")


async def test_auth_routes_do_not_exist_without_local_accounts(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    client = await aiohttp_client(app_factory())
    await error_of(await login(client), 404, "not_found")


def test_local_accounts_refuse_a_short_key_at_boot() -> None:
    from gateway.accounts.tokens import local_auth_problems
    from tests.conftest import make_settings

    assert local_auth_problems(make_settings(**local_overrides())) == []
    problems = local_auth_problems(
        make_settings(
            AUTH_LOCAL_ENABLED="true", AUTH_LOCAL_JWT_SECRET="short", AUTH_LOCAL_ISSUER=BASE_ENV["JWT_ISSUER"]
        )
    )
    assert any("32 bytes" in p for p in problems)
    assert any("must differ from JWT_ISSUER" in p for p in problems)


# ------------------------------------------------------------------ gateway users create


def test_users_create_command(
    database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_ENV_FILE", str(tmp_path / "none.env"))
    email = f"cli-{tmp_path.name}@example.com"

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "create", "--email", email, "--password-stdin"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["users", "create", "--email", email, "--role", "admin", "--password-stdin"]) == 0
    user_id = capsys.readouterr().out.strip()
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["users", "create", "--email", email.upper(), "--password-stdin"]) == 1

    async def read() -> Any:
        con = await asyncpg.connect(database_url)
        try:
            return await con.fetchrow("SELECT id::text, email, password_hash, roles FROM users WHERE email = $1", email)
        finally:
            await con.execute("DELETE FROM users WHERE email = $1", email)
            await con.close()

    row = asyncio.run(read())
    assert row["id"] == user_id
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert list(row["roles"]) == ["admin"]
