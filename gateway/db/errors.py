"""Which database failures mean "unavailable, retry later" (503) rather than a bug (500)."""

from __future__ import annotations

import asyncpg

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset
    TimeoutError,  # pool acquire or command timeout
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, statement timeout, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
)
