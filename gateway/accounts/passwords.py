"""argon2id password hashes (argon2-cffi), hashed and checked in a worker thread: they are slow on purpose.

`check_password(None, password)` checks against a dummy hash made with the same parameters, so an unknown
account costs the same time as a wrong password.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # longer inputs are refused before hashing (no hashing-cost amplification)

_HASHER = PasswordHasher(type=Type.ID)


def hash_password_sync(password: str) -> str:
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(24))


def _check(stored: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash); the dummy hash when `stored` is None, so the work is the same."""
    try:
        _HASHER.verify(stored or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored is None:
        return False, False
    return True, _HASHER.check_needs_rehash(stored)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


async def check_password(stored: str | None, password: str) -> tuple[bool, bool]:
    return await asyncio.to_thread(_check, stored, password)


def warm_up() -> None:
    """Make the dummy hash now (at startup) rather than during the first login of an unknown account."""
    _dummy_hash()
