"""JWT verification: an algorithm allowlist, the required claims, and a key chosen by the algorithm's family.

Keys come from two sources:

- `JWT_SECRET` for the HMAC algorithms (HS256/384/512);
- `JWT_JWKS_URL` for RSA (RS*, PS*) and EC (ES*) keys of an identity provider, fetched with aiohttp (the
  event loop never blocks), cached `JWKS_CACHE_SECONDS`, refetched when a token names an unknown `kid` but at
  most once per `JWKS_REFETCH_COOLDOWN_SECONDS`.

The key handed to PyJWT is always chosen from the token's `alg` family and PyJWT is told to accept that
one algorithm only: an HMAC token is only ever checked against the HMAC secret (never against an RSA public
key, the classic key-confusion attack), a JWKS key is only used when its type (and curve) fits the algorithm,
and `none` is always refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web
from jwt.types import Options

from gateway import keys
from gateway.settings import Settings

log = logging.getLogger("gateway.auth")

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
# RFC 7519 NumericDate: a JSON number. PyJWT also takes a numeric string ("9999999999"); the gateway does not.
TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_TOKEN_LENGTH = 16_384
MAX_JWKS_BYTES = 1_048_576
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
# After a failed JWKS fetch, wait this long (at most the refetch cooldown) before trying again.
JWKS_FAILURE_BACKOFF_SECONDS = 5.0

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class TokenRejected(Exception):
    """The token is missing a piece, malformed, badly signed, expired or not meant for us.

    `reason` is a short machine word safe to log; `message` is safe to show the client.
    Neither carries the token.
    """

    def __init__(self, reason: str, message: str = "The access token is invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class KeySourceUnavailable(Exception):
    """The JWKS could not be fetched and no usable cached copy exists: not the client's fault (503)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: its subject, its roles and every claim."""

    user_id: str
    roles: frozenset[str]
    claims: Mapping[str, Any]


def check_token_shape(token: str) -> None:
    """TokenRejected("malformed") for a token no JWT library should be handed: empty, too long, or not ASCII
    (a JWT is base64url and dots; a non-ASCII character would raise from deep inside the library)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenRejected("malformed")


def roles_from_claims(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """Follow a dotted claim path (`app_metadata.roles`); the value may be a list of strings or one string."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return frozenset()
        value = value[part]
    if isinstance(value, str):
        return frozenset({value}) if value else frozenset()
    if isinstance(value, list | tuple):
        return frozenset(item for item in value if isinstance(item, str) and item)
    return frozenset()


def _key_fits(jwk: jwt.PyJWK, data: Mapping[str, Any], alg: str) -> bool:
    """A JWKS key may only verify an algorithm of its own family (and curve), and of its declared `alg`."""
    declared = data.get("alg")
    if declared is not None and declared != alg:
        return False
    if alg in _RSA:
        return jwk.key_type == "RSA"
    curve = _EC_CURVES.get(alg)
    if curve is not None:
        return jwk.key_type == "EC" and data.get("crv") == curve
    return False


class TokenVerifier:
    """Verifies bearer tokens; one per application (see `token_verifier_ctx`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = settings.jwt_secret
        self._jwks_url = settings.jwt_jwks_url
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._roles_claim = settings.jwt_roles_claim
        self._cache_seconds = float(settings.jwks_cache_seconds)
        self._cooldown = float(settings.jwks_refetch_cooldown_seconds)
        self._clock = clock
        # An algorithm is usable only when its key source is configured.
        self._algorithms = frozenset(
            alg
            for alg in settings.jwt_algorithms
            if (alg in _HMAC and self._secret) or ((alg in _RSA or alg in _EC_CURVES) and self._jwks_url)
        )
        self._session = session
        self._owns_session = session is None
        # JWKS cache: kid -> (key, raw JWK); keys without a kid are kept under "".
        self._jwks: dict[str, list[tuple[jwt.PyJWK, dict[str, Any]]]] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._last_kid_refetch: float | None = None
        self._fetch_lock = asyncio.Lock()
        self._generation = 0
        self.jwks_fetches = 0

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ verification

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; TokenRejected otherwise (KeySourceUnavailable: JWKS down)."""
        check_token_shape(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg not in self._algorithms:
            raise TokenRejected("algorithm_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")

        key: Any
        if alg in _HMAC:
            key = self._secret
        else:
            key = await self._jwks_key(kid, alg)
        return self._decode(token, key, alg)

    def _decode(self, token: str, key: Any, alg: str) -> Identity:
        options: Options = {
            "require": list(REQUIRED_CLAIMS),
            "verify_signature": True,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": True,
            "verify_iss": self._issuer is not None,
            "verify_aud": self._audience is not None,
            "verify_sub": True,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options=options,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "The access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not_yet_valid", "The access token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"missing_{exc.claim}") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong_issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong_audience") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad_signature") from None
        except jwt.InvalidKeyError:
            raise TokenRejected("bad_key") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid") from None
        for name in TIME_CLAIMS:
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TokenRejected(f"invalid_{name}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise TokenRejected("missing_sub")
        return Identity(user_id=sub, roles=roles_from_claims(claims, self._roles_claim), claims=claims)

    # ------------------------------------------------------------------ JWKS

    async def _jwks_key(self, kid: str | None, alg: str) -> Any:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
            await self._refresh(reason="expired")
        key = self._find(kid, alg)
        if key is None and kid is not None and kid not in self._jwks:
            now = self._clock()
            if self._last_kid_refetch is None or now - self._last_kid_refetch >= self._cooldown:
                self._last_kid_refetch = now
                await self._refresh(reason="unknown_kid")
                key = self._find(kid, alg)
        if key is None:
            raise TokenRejected("unknown_key")
        return key

    def _find(self, kid: str | None, alg: str) -> Any:
        if kid is not None:
            candidates = self._jwks.get(kid, [])
        else:
            candidates = [entry for entries in self._jwks.values() for entry in entries]
        fitting = [jwk.key for jwk, data in candidates if _key_fits(jwk, data, alg)]
        # Without a kid, only an unambiguous key set is usable.
        return fitting[0] if len(fitting) == 1 else None

    async def _refresh(self, *, reason: str) -> None:
        """Fetch the JWKS once for everybody waiting (single flight); keep the old keys if the fetch fails."""
        generation = self._generation
        async with self._fetch_lock:
            if self._generation != generation:
                return  # another request refreshed while we waited
            now = self._clock()
            if self._failed_at is not None and now - self._failed_at < min(
                self._cooldown, JWKS_FAILURE_BACKOFF_SECONDS
            ):
                if not self._jwks:
                    raise KeySourceUnavailable("JWKS fetch failed recently")
                return
            try:
                keys_by_kid = await self._fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._failed_at = self._clock()
                log.warning("JWKS fetch failed", extra={"reason": reason, "code": type(exc).__name__})
                if not self._jwks:
                    raise KeySourceUnavailable("JWKS unavailable") from None
                return
            self._jwks = keys_by_kid
            self._fetched_at = self._clock()
            self._failed_at = None
            self._generation += 1

    async def _fetch(self) -> dict[str, list[tuple[jwt.PyJWK, dict[str, Any]]]]:
        if self._jwks_url is None:
            raise ValueError("no JWKS URL")
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        self.jwks_fetches += 1
        timeout = aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT_SECONDS)
        async with self._session.get(
            self._jwks_url, timeout=timeout, allow_redirects=False, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            if response.content_length is not None and response.content_length > MAX_JWKS_BYTES:
                raise ValueError("JWKS too large")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS too large")
        document = orjson.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document")
        result: dict[str, list[tuple[jwt.PyJWK, dict[str, Any]]]] = {}
        for data in document["keys"]:
            if not isinstance(data, dict):
                continue
            if data.get("kty") not in ("RSA", "EC"):
                continue  # symmetric ("oct") or unsupported keys are never taken from a JWKS
            if data.get("use", "sig") != "sig":
                continue
            kid = data.get("kid", "")
            if not isinstance(kid, str):
                continue
            try:
                jwk = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue
            result.setdefault(kid, []).append((jwk, data))
        log.info("JWKS fetched")
        return result


async def token_verifier_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the application's TokenVerifier (and its JWKS HTTP session)."""
    verifier = TokenVerifier(app[keys.SETTINGS])
    app[keys.TOKEN_VERIFIER] = verifier
    try:
        yield
    finally:
        await verifier.close()
