"""TokenVerifier: real crypto (keys generated here), a local JWKS server, every way a token can be wrong."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth.tokens import KeySourceUnavailable, TokenRejected, TokenVerifier, roles_from_claims
from gateway.settings import Settings
from tests.conftest import TEST_AUDIENCE, TEST_ISSUER, TEST_JWT_SECRET, make_settings

JWKS_PATH = "/.well-known/jwks.json"
ASYMMETRIC = "HS256,RS256,ES256"

# ------------------------------------------------ keys and tokens (also used by the middleware tests)


@functools.cache
def rsa_key(name: str = "rsa-1") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str = "ec-1") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(kid: str = "rsa-1", alg: str | None = "RS256") -> dict[str, Any]:
    data = RSAAlgorithm.to_jwk(rsa_key(kid).public_key(), as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    if alg:
        data["alg"] = alg
    return data


def ec_jwk(kid: str = "ec-1") -> dict[str, Any]:
    data = ECAlgorithm.to_jwk(ec_key(kid).public_key(), as_dict=True)
    data.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return data


def rsa_public_pem(kid: str = "rsa-1") -> bytes:
    return (
        rsa_key(kid)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the test issuer/audience; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-1",
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = TEST_JWT_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def rs256(payload: dict[str, Any], kid: str = "rsa-1", signing_kid: str | None = None) -> str:
    return jwt.encode(payload, rsa_key(signing_kid or kid), algorithm="RS256", headers={"kid": kid})


def es256(payload: dict[str, Any], kid: str = "ec-1") -> str:
    return jwt.encode(payload, ec_key(kid), algorithm="ES256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token built by hand, the way an attacker would (PyJWT refuses to sign some of these)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}".encode()
    return f"{signing_input.decode()}.{_b64(sign(signing_input))}"


def alg_none(payload: dict[str, Any], alg: str = "none") -> str:
    return handmade({"alg": alg, "typ": "JWT"}, payload, lambda _: b"")


def hs256_with_rsa_public_key(payload: dict[str, Any], kid: str = "rsa-1") -> str:
    """The key-confusion attack: HMAC-SHA256 keyed with the RSA public key (PEM) the verifier knows."""
    pem = rsa_public_pem(kid)
    return handmade(
        {"alg": "HS256", "typ": "JWT", "kid": kid},
        payload,
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )


@dataclass
class JwksServer:
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    url: str = ""


@pytest.fixture
async def jwks_server(aiohttp_server: Any) -> JwksServer:
    state = JwksServer(keys=[rsa_jwk("rsa-1"), ec_jwk("ec-1")])

    async def serve(request: web.Request) -> web.Response:
        state.fetches += 1
        if state.status != 200:
            return web.json_response({"error": "down"}, status=state.status)
        return web.json_response({"keys": state.keys})

    app = web.Application()
    app.router.add_get(JWKS_PATH, serve)
    server = await aiohttp_server(app)
    state.url = str(server.make_url(JWKS_PATH))
    return state


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeVerifier = Callable[..., TokenVerifier]


@pytest.fixture
async def make_verifier() -> AsyncIterator[MakeVerifier]:
    made: list[TokenVerifier] = []

    def factory(settings: Settings, clock: Callable[[], float] = time.monotonic) -> TokenVerifier:
        verifier = TokenVerifier(settings, clock=clock)
        made.append(verifier)
        return verifier

    yield factory
    for verifier in made:
        await verifier.close()


async def rejected(call: Awaitable[object]) -> str:
    with pytest.raises(TokenRejected) as info:
        await call
    return info.value.reason


# ---------------------------------------------------------------- valid tokens


async def test_valid_hs256(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings())
    identity = await verifier.verify(hs256(claims(roles=["admin", "support"])))
    assert identity.user_id == "user-1"
    assert identity.roles == {"admin", "support"}
    assert identity.claims["iss"] == TEST_ISSUER


async def test_valid_rs256_and_es256_from_jwks(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    assert (await verifier.verify(rs256(claims(sub="rsa-user")))).user_id == "rsa-user"
    assert (await verifier.verify(es256(claims(sub="ec-user")))).user_id == "ec-user"
    assert (await verifier.verify(hs256(claims(sub="hs-user")))).user_id == "hs-user"
    assert jwks_server.fetches == 1  # cached


async def test_jwks_only_without_secret(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    settings = make_settings(JWT_SECRET="", JWT_ALGORITHMS="RS256", JWT_JWKS_URL=jwks_server.url)
    verifier = make_verifier(settings)
    assert (await verifier.verify(rs256(claims()))).user_id == "user-1"
    assert await rejected(verifier.verify(hs256(claims()))) == "algorithm_not_allowed"


async def test_leeway_tolerates_small_clock_skew(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings(JWT_LEEWAY_SECONDS=30))
    now = int(time.time())
    assert (await verifier.verify(hs256(claims(exp=now - 10, iat=now - 300)))).user_id == "user-1"
    assert (await verifier.verify(hs256(claims(iat=now + 10)))).user_id == "user-1"


async def test_supabase_style_token(make_verifier: MakeVerifier) -> None:
    settings = make_settings(
        JWT_ISSUER="https://abcd.supabase.co/auth/v1",
        JWT_AUDIENCE="authenticated",
        JWT_ROLES_CLAIM="app_metadata.roles",
    )
    verifier = make_verifier(settings)
    token = hs256(
        claims(
            sub="8f14e45f-ceea-467f-a0e4-3f1d9b2f5c11",
            iss="https://abcd.supabase.co/auth/v1",
            aud="authenticated",
            role="authenticated",
            aal="aal1",
            session_id="5b0c1d2e-0000-4000-8000-000000000000",
            email="someone@example.com",
            app_metadata={"provider": "email", "providers": ["email"], "roles": ["admin"]},
            user_metadata={},
            is_anonymous=False,
        )
    )
    identity = await verifier.verify(token)
    assert identity.user_id == "8f14e45f-ceea-467f-a0e4-3f1d9b2f5c11"
    assert identity.roles == {"admin"}
    # the default audience of the tests is refused for such a token
    assert (
        await rejected(make_verifier(make_settings(JWT_ISSUER="https://abcd.supabase.co/auth/v1")).verify(token))
        == "wrong_audience"
    )


async def test_supabase_style_es256_from_jwks(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    settings = make_settings(
        JWT_SECRET="",
        JWT_ALGORITHMS="ES256",
        JWT_JWKS_URL=jwks_server.url,
        JWT_ISSUER="https://abcd.supabase.co/auth/v1",
        JWT_AUDIENCE="authenticated",
        JWT_ROLES_CLAIM="app_metadata.roles",
    )
    token = es256(
        claims(iss="https://abcd.supabase.co/auth/v1", aud="authenticated", app_metadata={"roles": "support"})
    )
    identity = await make_verifier(settings).verify(token)
    assert identity.roles == {"support"}


# ---------------------------------------------------------------- algorithm attacks


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(make_verifier: MakeVerifier, jwks_server: JwksServer, alg: str) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    assert await rejected(verifier.verify(alg_none(claims(), alg))) == "algorithm_not_allowed"
    # also with a signature part that is not empty
    token = alg_none(claims(), alg) + "c2lnbmF0dXJl"
    assert await rejected(verifier.verify(token)) == "algorithm_not_allowed"


async def test_hs256_signed_with_rsa_public_key_is_refused(
    make_verifier: MakeVerifier, jwks_server: JwksServer
) -> None:
    forged = hs256_with_rsa_public_key(claims(sub="attacker", roles=["admin"]))
    # HS256 allowed (a secret exists): the HMAC secret is used, never the RSA key -> bad signature
    both = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    await both.verify(rs256(claims()))  # the RSA key is in the cache
    assert await rejected(both.verify(forged)) == "bad_signature"
    # JWKS only: HS256 has no key source, so it is not allowed at all
    jwks_only = make_verifier(make_settings(JWT_SECRET="", JWT_ALGORITHMS="HS256,RS256", JWT_JWKS_URL=jwks_server.url))
    assert await rejected(jwks_only.verify(forged)) == "algorithm_not_allowed"


async def test_algorithm_outside_allowlist(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS="HS256,RS256", JWT_JWKS_URL=jwks_server.url))
    assert await rejected(verifier.verify(es256(claims()))) == "algorithm_not_allowed"
    hs384 = jwt.encode(claims(), TEST_JWT_SECRET, algorithm="HS384")
    assert await rejected(verifier.verify(hs384)) == "algorithm_not_allowed"


async def test_key_type_must_match_algorithm(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    # an RS256 token naming the EC key, an ES256 token naming the RSA key
    rsa_on_ec_kid = jwt.encode(claims(), rsa_key("rsa-1"), algorithm="RS256", headers={"kid": "ec-1"})
    ec_on_rsa_kid = jwt.encode(claims(), ec_key("ec-1"), algorithm="ES256", headers={"kid": "rsa-1"})
    assert await rejected(verifier.verify(rsa_on_ec_kid)) == "unknown_key"
    assert await rejected(verifier.verify(ec_on_rsa_kid)) == "unknown_key"


async def test_jwk_declared_alg_must_match(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    jwks_server.keys = [rsa_jwk("rsa-1", alg="RS384")]
    verifier = make_verifier(make_settings(JWT_ALGORITHMS="RS256,RS384", JWT_JWKS_URL=jwks_server.url))
    assert await rejected(verifier.verify(rs256(claims()))) == "unknown_key"


async def test_symmetric_keys_in_jwks_are_ignored(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    secret = b"attacker-controlled-oct-key-0123456789"
    jwks_server.keys = [{"kty": "oct", "kid": "oct-1", "k": _b64(secret), "alg": "HS256"}]
    verifier = make_verifier(make_settings(JWT_ALGORITHMS="HS256,RS256", JWT_JWKS_URL=jwks_server.url))
    token = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "oct-1"})
    assert await rejected(verifier.verify(token)) == "bad_signature"


async def test_tampered_payload_and_garbage(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings())
    header, _, signature = hs256(claims()).split(".")
    forged_payload = _b64(json.dumps(claims(sub="someone-else")).encode())
    assert await rejected(verifier.verify(f"{header}.{forged_payload}.{signature}")) == "bad_signature"
    other_secret = "another-secret-" + "y" * 32
    assert await rejected(verifier.verify(hs256(claims(), secret=other_secret))) == "bad_signature"
    for garbage in ("", "abc", "a.b.c", "x" * 20_000):
        assert await rejected(verifier.verify(garbage)) == "malformed"


# ---------------------------------------------------------------- claims


async def test_expired(make_verifier: MakeVerifier) -> None:
    now = int(time.time())
    verifier = make_verifier(make_settings(JWT_LEEWAY_SECONDS=30))
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(hs256(claims(iat=now - 600, exp=now - 60)))
    assert info.value.reason == "expired"
    assert info.value.message == "The access token has expired"


async def test_not_yet_valid(make_verifier: MakeVerifier) -> None:
    now = int(time.time())
    verifier = make_verifier(make_settings(JWT_LEEWAY_SECONDS=30))
    assert await rejected(verifier.verify(hs256(claims(iat=now + 120)))) == "not_yet_valid"
    assert await rejected(verifier.verify(hs256(claims(nbf=now + 120)))) == "not_yet_valid"


async def test_wrong_issuer_and_audience(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings())
    assert await rejected(verifier.verify(hs256(claims(iss="https://evil.test")))) == "wrong_issuer"
    assert await rejected(verifier.verify(hs256(claims(aud="another-api")))) == "wrong_audience"
    assert (await verifier.verify(hs256(claims(aud=["another-api", TEST_AUDIENCE])))).user_id == "user-1"


@pytest.mark.parametrize("claim", ["sub", "exp", "iat", "iss", "aud"])
async def test_required_claims(make_verifier: MakeVerifier, claim: str) -> None:
    verifier = make_verifier(make_settings())
    assert await rejected(verifier.verify(hs256(claims(**{claim: None})))) == f"missing_{claim}"


async def test_sub_must_be_a_non_empty_string(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings())
    assert await rejected(verifier.verify(hs256(claims(sub=42)))) == "invalid"
    assert await rejected(verifier.verify(hs256(claims(sub="  ")))) == "missing_sub"


def test_roles_from_claims() -> None:
    assert roles_from_claims({"roles": ["a", "b", 3, ""]}, "roles") == {"a", "b"}
    assert roles_from_claims({"roles": "admin"}, "roles") == {"admin"}
    assert roles_from_claims({"app_metadata": {"roles": ["admin"]}}, "app_metadata.roles") == {"admin"}
    assert roles_from_claims({"app_metadata": {"roles": "admin"}}, "app_metadata.roles") == {"admin"}
    assert roles_from_claims({"app_metadata": "x"}, "app_metadata.roles") == frozenset()
    assert roles_from_claims({}, "roles") == frozenset()
    assert roles_from_claims({"roles": {"admin": True}}, "roles") == frozenset()


# ---------------------------------------------------------------- JWKS cache, refetch, cooldown


async def test_unknown_kid_refetches_once_then_cooldown(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    clock = FakeClock()
    settings = make_settings(
        JWT_ALGORITHMS=ASYMMETRIC,
        JWT_JWKS_URL=jwks_server.url,
        JWKS_CACHE_SECONDS=300,
        JWKS_REFETCH_COOLDOWN_SECONDS=30,
    )
    verifier = make_verifier(settings, clock=clock)
    await verifier.verify(rs256(claims()))
    assert jwks_server.fetches == 1

    rotated = rs256(claims(sub="rotated"), kid="rsa-2")
    assert await rejected(verifier.verify(rotated)) == "unknown_key"
    assert jwks_server.fetches == 2  # the unknown kid triggered one refetch
    for _ in range(5):
        assert await rejected(verifier.verify(rotated)) == "unknown_key"
    assert jwks_server.fetches == 2  # cooldown: no more fetches

    jwks_server.keys.append(rsa_jwk("rsa-2"))  # the provider publishes the new key
    clock.now += 10
    assert await rejected(verifier.verify(rotated)) == "unknown_key"
    assert jwks_server.fetches == 2  # still inside the cooldown

    clock.now += 21
    assert (await verifier.verify(rotated)).user_id == "rotated"
    assert jwks_server.fetches == 3
    assert (await verifier.verify(rotated)).user_id == "rotated"
    assert (await verifier.verify(rs256(claims()))).user_id == "user-1"
    assert jwks_server.fetches == 3


async def test_jwks_cache_expires(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    clock = FakeClock()
    settings = make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url, JWKS_CACHE_SECONDS=300)
    verifier = make_verifier(settings, clock=clock)
    await verifier.verify(rs256(claims()))
    clock.now += 299
    await verifier.verify(es256(claims()))
    assert jwks_server.fetches == 1
    clock.now += 2
    await verifier.verify(rs256(claims()))
    assert jwks_server.fetches == 2


async def test_concurrent_cold_cache_fetches_once(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    token = rs256(claims())
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert {identity.user_id for identity in results} == {"user-1"}
    assert jwks_server.fetches == 1


async def test_jwks_down_without_cached_keys(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    clock = FakeClock()
    jwks_server.status = 503
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url), clock=clock)
    with pytest.raises(KeySourceUnavailable):
        await verifier.verify(rs256(claims()))
    with pytest.raises(KeySourceUnavailable):
        await verifier.verify(rs256(claims()))
    assert jwks_server.fetches == 1  # backoff after a failure
    # HMAC tokens do not depend on the JWKS
    assert (await verifier.verify(hs256(claims()))).user_id == "user-1"

    jwks_server.status = 200
    clock.now += 6
    assert (await verifier.verify(rs256(claims()))).user_id == "user-1"
    assert jwks_server.fetches == 2


async def test_stale_keys_kept_when_refresh_fails(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    clock = FakeClock()
    settings = make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url, JWKS_CACHE_SECONDS=60)
    verifier = make_verifier(settings, clock=clock)
    await verifier.verify(rs256(claims()))
    jwks_server.status = 500
    clock.now += 120
    assert (await verifier.verify(rs256(claims()))).user_id == "user-1"
    assert (await verifier.verify(rs256(claims()))).user_id == "user-1"
    assert jwks_server.fetches == 2  # one failed refresh, then backoff


async def test_token_without_kid_uses_the_only_fitting_key(
    make_verifier: MakeVerifier, jwks_server: JwksServer
) -> None:
    verifier = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    no_kid = jwt.encode(claims(), rsa_key("rsa-1"), algorithm="RS256")
    assert (await verifier.verify(no_kid)).user_id == "user-1"
    jwks_server.keys.append(rsa_jwk("rsa-2"))
    ambiguous = make_verifier(make_settings(JWT_ALGORITHMS=ASYMMETRIC, JWT_JWKS_URL=jwks_server.url))
    assert await rejected(ambiguous.verify(no_kid)) == "unknown_key"


async def test_rejections_never_carry_the_token(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(make_settings())
    token = hs256(claims(aud="another-api"))
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token)
    assert token not in str(info.value) and token not in info.value.message


def test_production_refuses_plain_http_jwks() -> None:
    from gateway.settings import ConfigError

    with pytest.raises(ConfigError) as info:
        make_settings(APP_ENV="production", JWT_JWKS_URL="http://idp.example.com/jwks.json")
    assert any(p.startswith("JWT_JWKS_URL") for p in info.value.problems)
