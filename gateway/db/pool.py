"""The asyncpg pool: JSON codecs through orjson, timeouts from the settings."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from gateway.settings import Settings


async def _init_connection(con: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await con.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            format="text",
        )


async def _keep_session(con: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg still rolls back an open transaction and drops listeners before calling it;
    its default reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is skipped because pooled
    connections never keep session state here (advisory locks are transaction-scoped, no SET, no LISTEN):
    one round trip less per request."""
    return None


async def create_pool(settings: Settings, url: str, **overrides: Any) -> asyncpg.Pool:
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "command_timeout": settings.db_command_timeout,
        "timeout": settings.db_acquire_timeout,
        "init": _init_connection,
        "reset": _keep_session,
        # A row lock held too long fails the statement (LockNotAvailableError) before the command timeout does.
        "server_settings": {
            "application_name": "stripe-gateway",
            "lock_timeout": f"{int(settings.db_lock_timeout * 1000)}ms",
        },
    }
    options.update(overrides)
    return await asyncpg.create_pool(url, **options)


async def connect(url: str, *, connect_timeout: float = 10.0) -> asyncpg.Connection:
    con = await asyncpg.connect(url, timeout=connect_timeout)
    await _init_connection(con)
    return con
