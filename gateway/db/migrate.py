"""Plain SQL migrations: `sql/migrations/NNNN_name.sql`, applied in order, each in its own transaction, recorded
with a checksum, under an advisory lock so several pods may run them at once."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql" / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant shared by every gateway process: pg_advisory_lock(bigint).
MIGRATION_LOCK_KEY = 0x5717E_6A7E

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
SELECT_CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"


class MigrationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return migrations


def latest_version(folder: Path = MIGRATIONS_DIR) -> int:
    migrations = load_migrations(folder)
    return migrations[-1].version if migrations else 0


def _check_unchanged(applied: list[asyncpg.Record], known: dict[int, Migration]) -> None:
    for row in applied:
        migration = known.get(row["version"])
        if migration is None:
            raise MigrationError(f"applied migration {row['version']:04d}_{row['name']} has no file")
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {row['version']:04d}_{row['name']}.sql changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )


async def migrate(con: asyncpg.Connection, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration; return those applied by this call."""
    migrations = load_migrations(folder)
    known = {m.version: m for m in migrations}
    await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await con.execute(CREATE_MIGRATIONS_TABLE)
        applied = await con.fetch(SELECT_APPLIED)
        _check_unchanged(applied, known)
        done = {row["version"] for row in applied}
        newly_applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with con.transaction():
                await con.execute(migration.sql)
                await con.execute(INSERT_APPLIED, migration.version, migration.name, migration.checksum)
            newly_applied.append(migration)
        return newly_applied
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def status(con: asyncpg.Connection, folder: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    migrations = load_migrations(folder)
    await con.execute(CREATE_MIGRATIONS_TABLE)
    applied = await con.fetch(SELECT_APPLIED)
    _check_unchanged(applied, {m.version: m for m in migrations})
    when = {row["version"]: row["applied_at"] for row in applied}
    return [MigrationStatus(m.version, m.name, when.get(m.version)) for m in migrations]
