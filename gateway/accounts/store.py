"""Users and refresh tokens in PostgreSQL. Only the SHA-256 of a refresh token is ever stored.

Rotation: each refresh marks the presented token used (`replaced_by` the new one) in the transaction that
issues its successor. A token presented after it was used or revoked is a reuse: the whole family is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

FIND_USER = "SELECT id::text, password_hash, roles, disabled_at FROM users WHERE email = $1"
INSERT_USER = "INSERT INTO users (email, password_hash, roles) VALUES ($1, $2, $3) RETURNING id::text"
UPDATE_PASSWORD_HASH = "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1::uuid"  # noqa: S105

INSERT_REFRESH = """
INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5)
"""
LOCK_REFRESH = """
SELECT r.id::text, r.user_id::text, r.family_id::text, r.expires_at, r.used_at, r.revoked_at,
       u.roles, u.disabled_at
FROM refresh_tokens r JOIN users u ON u.id = r.user_id
WHERE r.token_hash = $1
FOR UPDATE OF r
"""
MARK_USED = "UPDATE refresh_tokens SET used_at = now(), replaced_by = $2::uuid WHERE id = $1::uuid"
REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = $2
WHERE family_id = $1::uuid AND revoked_at IS NULL
"""
INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, subject_type, subject_id, request_id, details)
VALUES ($1, $2, 'user', $3, $4, $5)
"""

TOKEN_BYTES = 32


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    expires_at: datetime


async def _insert_refresh(con: asyncpg.Connection, user_id: str, family_id: str, ttl: int) -> tuple[str, IssuedRefresh]:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    token_id = str(uuid.uuid4())
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    await con.execute(INSERT_REFRESH, token_id, user_id, family_id, token_hash(token), expires_at)
    return token_id, IssuedRefresh(token, expires_at)


async def start_family(con: asyncpg.Connection, user_id: str, ttl: int) -> IssuedRefresh:
    """A login: a new family and its first token."""
    async with con.transaction():
        _, issued = await _insert_refresh(con, user_id, str(uuid.uuid4()), ttl)
    return issued


RotateState = Literal["rotated", "unknown", "expired", "reused", "revoked", "disabled"]


@dataclass(frozen=True, slots=True)
class Rotation:
    state: RotateState
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    issued: IssuedRefresh | None = None


async def rotate(con: asyncpg.Connection, token: str, ttl: int, request_id: str | None) -> Rotation:
    """One transaction: check the presented token and issue its successor, or revoke its family on reuse.

    The revocation of a reused family commits even though the caller answers 401.
    """
    async with con.transaction():
        row = await con.fetchrow(LOCK_REFRESH, token_hash(token))
        if row is None:
            return Rotation("unknown")
        user_id: str = row["user_id"]
        if row["used_at"] is not None:
            # Rotated already: somebody replays an old token (stolen, or a copy). Kill the whole session.
            await con.execute(REVOKE_FAMILY, row["family_id"], "reuse_detected")
            await con.execute(
                INSERT_AUDIT,
                f"user:{user_id}",
                "auth.refresh_reuse_detected",
                user_id,
                request_id,
                {"family_id": row["family_id"]},
            )
            return Rotation("reused", user_id)
        if row["revoked_at"] is not None:
            return Rotation("revoked", user_id)
        if row["disabled_at"] is not None:
            await con.execute(REVOKE_FAMILY, row["family_id"], "user_disabled")
            return Rotation("disabled", user_id)
        if row["expires_at"] <= datetime.now(UTC):
            await con.execute(REVOKE_FAMILY, row["family_id"], "expired")
            return Rotation("expired", user_id)
        new_id, issued = await _insert_refresh(con, user_id, row["family_id"], ttl)
        await con.execute(MARK_USED, row["id"], new_id)
        return Rotation("rotated", user_id, tuple(row["roles"]), issued)


async def revoke(con: asyncpg.Connection, token: str, reason: str) -> bool:
    """Logout: revoke the family of the presented token (whatever its state); False when it is unknown."""
    async with con.transaction():
        row = await con.fetchrow(LOCK_REFRESH, token_hash(token))
        if row is None:
            return False
        await con.execute(REVOKE_FAMILY, row["family_id"], reason)
    return True


async def create_user(con: asyncpg.Connection, email: str, password_hash: str, roles: list[str]) -> str:
    async with con.transaction():
        user_id: str = await con.fetchval(INSERT_USER, normalise_email(email), password_hash, roles)
        await con.execute(INSERT_AUDIT, "cli", "user.created", user_id, None, {"roles": roles})
    return user_id
