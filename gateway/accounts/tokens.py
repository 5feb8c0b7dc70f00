"""The gateway's own access tokens (local accounts), accepted side by side with an identity provider's.

Local access tokens are HS256 JWTs signed with `AUTH_LOCAL_JWT_SECRET` (or `JWT_SECRET` when unset), with the
gateway's own issuer and audience (`AUTH_LOCAL_ISSUER`, `AUTH_LOCAL_AUDIENCE`) and `token_use: "access"`.

`GatewayTokenVerifier` replaces the application's verifier when local accounts are enabled: a token whose
(unverified) `iss` is the gateway's issuer is verified only with the local key and claims; any other token
goes to the identity provider's verifier unchanged (JWKS or JWT_SECRET, its issuer and audience). The
unverified `iss` only picks the verifier; signature, issuer and audience are always checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
from aiohttp import web

from gateway import keys
from gateway.accounts import passwords
from gateway.auth.tokens import Identity, TokenRejected, TokenVerifier, check_token_shape
from gateway.settings import ConfigError, Settings

LOCAL_ALGORITHM = "HS256"
ROLES_CLAIM = "roles"
# The subject namespace of local accounts: a local user's id is "local:<uuid>", so no identity-provider user can
# ever have the same id (an identity provider's token with such a subject is refused).
LOCAL_SUBJECT_PREFIX = "local:"


def local_subject(user_id: str) -> str:
    """The gateway-wide user id of the local account `user_id` (the `users.id` uuid)."""
    return user_id if user_id.startswith(LOCAL_SUBJECT_PREFIX) else LOCAL_SUBJECT_PREFIX + user_id


def local_key(settings: Settings) -> str | None:
    return settings.auth_local_jwt_secret or settings.jwt_secret


def local_auth_problems(settings: Settings) -> list[str]:
    """Configuration problems of local accounts (checked at boot when AUTH_LOCAL_ENABLED)."""
    problems: list[str] = []
    key = local_key(settings)
    if not key:
        problems.append("AUTH_LOCAL_JWT_SECRET (or JWT_SECRET): required when AUTH_LOCAL_ENABLED=true")
    elif len(key.encode()) < 32:
        problems.append("AUTH_LOCAL_JWT_SECRET: must be at least 32 bytes")
    if settings.jwt_issuer and settings.jwt_issuer == settings.auth_local_issuer:
        problems.append("AUTH_LOCAL_ISSUER: must differ from JWT_ISSUER (the identity provider's issuer)")
    if settings.auth_access_token_ttl_seconds <= 0 or settings.auth_refresh_token_ttl_seconds <= 0:
        problems.append("AUTH_ACCESS_TOKEN_TTL_SECONDS and AUTH_REFRESH_TOKEN_TTL_SECONDS: must be positive")
    return problems


def _local_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        jwt_secret=local_key(settings),
        jwt_jwks_url=None,
        jwt_algorithms=(LOCAL_ALGORITHM,),
        jwt_issuer=settings.auth_local_issuer,
        jwt_audience=settings.auth_local_audience,
        jwt_roles_claim=ROLES_CLAIM,
    )


class AccessTokenIssuer:
    def __init__(self, settings: Settings) -> None:
        key = local_key(settings)
        if not key:
            raise ConfigError(local_auth_problems(settings))
        self._key = key
        self._issuer = settings.auth_local_issuer
        self._audience = settings.auth_local_audience
        self.ttl = settings.auth_access_token_ttl_seconds

    def issue(self, user_id: str, roles: list[str]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": local_subject(user_id),
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(12),
            "token_use": "access",
            ROLES_CLAIM: sorted(roles),
        }
        return jwt.encode(claims, self._key, algorithm=LOCAL_ALGORITHM)


def _unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


class GatewayTokenVerifier(TokenVerifier):
    """Local tokens (by issuer) with the local key and claims; every other token with `external`."""

    def __init__(self, settings: Settings, external: TokenVerifier) -> None:
        super().__init__(_local_settings(settings))
        self.external = external
        self._local_issuer = settings.auth_local_issuer

    @property
    def algorithms(self) -> frozenset[str]:
        return super().algorithms | self.external.algorithms

    async def verify(self, token: str) -> Identity:
        check_token_shape(token)
        if _unverified_issuer(token) != self._local_issuer:
            identity = await self.external.verify(token)
            if identity.user_id.startswith(LOCAL_SUBJECT_PREFIX):
                raise TokenRejected("reserved_subject")
            return identity
        identity = await super().verify(token)
        if identity.claims.get("token_use") != "access":
            raise TokenRejected("wrong_token_use")
        # Tokens issued before the namespace existed carry the bare uuid; they live AUTH_ACCESS_TOKEN_TTL_SECONDS.
        return dataclasses.replace(identity, user_id=local_subject(identity.user_id))


async def local_token_verifier_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after `token_verifier_ctx`): wrap the app's verifier so local tokens are accepted too."""
    settings = app[keys.SETTINGS]
    problems = local_auth_problems(settings)
    if problems:
        raise ConfigError(problems)
    external = app[keys.TOKEN_VERIFIER]
    app[keys.TOKEN_VERIFIER] = GatewayTokenVerifier(settings, external)
    app[keys.ACCESS_TOKENS] = AccessTokenIssuer(settings)
    await asyncio.to_thread(passwords.warm_up)  # the dummy hash of unknown-account logins
    yield
