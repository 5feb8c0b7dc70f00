"""Which database failures mean "unavailable, retry later" (503 + Retry-After, /ready false, CLI exit code 3)
rather than a bug (500): every failure to get or keep a working connection."""

from __future__ import annotations

import asyncpg

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset, host unreachable
    TimeoutError,  # connect, pool acquire or command timeout
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, statement timeout, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # class 28: password refused, unknown role
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: the database does not exist
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
)
