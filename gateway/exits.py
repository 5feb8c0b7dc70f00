"""Exit codes of the `gateway` command and the one-line operational errors behind them.

An everyday failure (the database down or refusing us, a migration failing, the port taken) ends a command with
one line on stderr and its own exit code, never a traceback: the operator reads what to fix, a script branches on
the code.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

OK = 0
FAILED = 1  # the command ran and something it did failed (a replayed event failed again, ...)
USAGE = 2  # a usage error, an invalid configuration (every problem listed), or nothing found
DATABASE_UNAVAILABLE = 3  # unreachable, refused the authentication, database missing, too many connections
MIGRATION_FAILED = 4
CANNOT_LISTEN = 5  # the address is in use or not allowed
INTERRUPTED = 130  # Ctrl-C

HELP = """\
exit codes:
  0    success
  1    the command ran and something failed (e.g. an event failed again)
  2    usage error, invalid configuration (every problem is listed), or nothing found
  3    database unavailable: unreachable, authentication refused, database missing, too many connections
  4    a migration failed
  5    cannot listen: the address is in use or not allowed
  130  interrupted (Ctrl-C)

settings come from the environment and the .env file (path: GATEWAY_ENV_FILE, default ./.env; the environment
wins); command-line options (serve --host/--port/--workers) win over both and are validated with them.
`gateway check-config` prints the verdict; every command refuses to run without it."""


class OperationalError(Exception):
    """A failure the operator fixes outside the code: reported as one line and `exit_code`."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def database_location(url: str) -> str:
    """host:port/database of a PostgreSQL URL, never its user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "DATABASE_URL"
    return f"{host}:{port}{parts.path or '/'}"


def database_failure(exc: BaseException, url: str | None) -> OperationalError:
    """The one line for a database that cannot be used (an error of gateway.db.errors.UNAVAILABLE_ERRORS)."""
    where = f" at {database_location(url)}" if url else ""
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # class 28: bad password, unknown role
        reason = f"authentication refused ({exc})"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        reason = f"database missing ({exc})"
    elif isinstance(exc, asyncpg.PostgresError):
        reason = f"{exc} ({type(exc).__name__})"
    elif isinstance(exc, TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, OSError):
        reason = f"unreachable ({exc.strerror or exc})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return OperationalError(f"database unavailable{where}: {reason}", DATABASE_UNAVAILABLE)
