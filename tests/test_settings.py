"""Settings: every problem reported together; the production guards, each with its message; `gateway
check-config` exits 2 listing the problems, 0 with a valid configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.settings import SETTING_FIELDS, ConfigError, Settings, describe, load_settings
from tests.conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]

PRODUCTION_ENV: dict[str, str] = {
    **BASE_ENV,
    "APP_ENV": "production",
    "TRUSTED_HOSTS": "api.shop.example",
    "CORS_ORIGINS": "https://shop.example",
    "STRIPE_SECRET_KEY": "sk_live" + "_51HxYzAbCdEf0123456789",
    "STRIPE_WEBHOOK_SECRET": "whsec_0123456789abcdefABCDEF",
    "DATABASE_URL": "postgresql://gateway@db.internal:5432/gateway",
}


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def test_test_and_production_baselines_are_valid() -> None:
    assert load_settings(BASE_ENV).app_env == "test"
    settings = load_settings(PRODUCTION_ENV)
    assert settings.is_production


def test_defaults_are_valid_in_development() -> None:
    settings = load_settings({})
    assert settings.app_env == "development"
    assert settings.json_body_limit == 102_400
    assert settings.rate_limit_webhook_max == 100


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            **BASE_ENV,
            "PORT": "9000",
            "DEBUG": "yes",
            "SHUTDOWN_DRAIN_SECONDS": "2.5",
            "TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
            "STRIPE_LIVEMODE": "",
            "APP_ENV": "Development",
        }
    )
    assert settings.port == 9000
    assert settings.debug is True
    assert settings.shutdown_drain_seconds == 2.5
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    assert settings.stripe_livemode is None
    assert settings.app_env == "development"


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            **BASE_ENV,
            "PORT": "not-a-number",
            "DEBUG": "maybe",
            "APP_ENV": "staging",
            "WORKERS": "0",
            "JSON_BODY_LIMIT": "0",
            "TRUSTED_PROXIES": "10.0.0.0/33",
            "CORS_ORIGINS": "https://shop.example/path",
            "JWT_SECRET": "short",
            "LOG_LEVEL": "LOUD",
            "RATE_LIMIT_STORE": "redis",
        }
    )
    text = "\n".join(problems)
    for name in (
        "PORT",
        "DEBUG",
        "APP_ENV",
        "WORKERS",
        "JSON_BODY_LIMIT",
        "TRUSTED_PROXIES",
        "CORS_ORIGINS",
        "JWT_SECRET",
        "LOG_LEVEL",
        "REDIS_URL",
    ):
        assert name in text, name
    assert len(problems) >= 10


def test_the_error_message_lists_them_all() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE_ENV, "PORT": "0", "WORKERS": "0"})
    assert "PORT" in str(caught.value) and "WORKERS" in str(caught.value)


# ------------------------------------------------------------------------------------ production guards

GUARDS: list[tuple[str, dict[str, str | None], str]] = [
    ("cors_star", {"CORS_ORIGINS": "*"}, "CORS_ORIGINS: '*' is refused in production"),
    ("cors_star_among_others", {"CORS_ORIGINS": "https://shop.example,*"}, "CORS_ORIGINS: '*' is refused"),
    ("hosts_star", {"TRUSTED_HOSTS": "*"}, "TRUSTED_HOSTS: '*' or an empty list is refused in production"),
    ("hosts_empty", {"TRUSTED_HOSTS": ""}, "TRUSTED_HOSTS: '*' or an empty list is refused"),
    (
        "webhook_secret_missing",
        {"STRIPE_WEBHOOK_SECRET": None},
        "STRIPE_WEBHOOK_SECRET: required in production",
    ),
    (
        "webhook_secret_malformed",
        {"STRIPE_WEBHOOK_SECRET": "sk_live" + "_notawebhooksecret"},
        "STRIPE_WEBHOOK_SECRET: every entry must start with whsec_",
    ),
    (
        "webhook_secret_one_bad",
        {"STRIPE_WEBHOOK_SECRET": "whsec_0123456789abcdef,oops"},
        "STRIPE_WEBHOOK_SECRET: every entry must start with whsec_",
    ),
    ("secret_key_missing", {"STRIPE_SECRET_KEY": None}, "STRIPE_SECRET_KEY: required in production"),
    (
        "secret_key_malformed",
        {"STRIPE_SECRET_KEY": "pk_live_publishablekey"},
        "STRIPE_SECRET_KEY: must start with sk_test_, sk_live_, rk_test_ or rk_live_",
    ),
    ("issuer_missing", {"JWT_ISSUER": None}, "JWT_ISSUER and JWT_AUDIENCE: required in production"),
    ("audience_missing", {"JWT_AUDIENCE": None}, "JWT_ISSUER and JWT_AUDIENCE: required in production"),
    (
        "no_key_source",
        {"JWT_SECRET": None},
        "JWT_SECRET or JWT_JWKS_URL: a key source is required in production",
    ),
    (
        "jwks_plain_http",
        {"JWT_SECRET": None, "JWT_JWKS_URL": "http://idp.example/jwks.json"},
        "JWT_JWKS_URL: must be an https:// URL in production",
    ),
    (
        "cookie_not_secure",
        {"AUTH_COOKIE_SECURE": "false"},
        "AUTH_COOKIE_SECURE: the refresh cookie must be Secure in production",
    ),
    ("debug_on", {"DEBUG": "true"}, "DEBUG: must be off in production"),
    ("database_missing", {"DATABASE_URL": None}, "DATABASE_URL: required in production"),
]


def with_changes(base: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    env = dict(base)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.mark.parametrize(("changes", "message"), [g[1:] for g in GUARDS], ids=[g[0] for g in GUARDS])
def test_production_guard(changes: dict[str, str | None], message: str) -> None:
    problems = problems_of(with_changes(PRODUCTION_ENV, changes))
    assert any(p.startswith(message) for p in problems), problems


@pytest.mark.parametrize(("changes", "message"), [g[1:] for g in GUARDS], ids=[g[0] for g in GUARDS])
def test_the_guards_are_for_production(changes: dict[str, str | None], message: str) -> None:
    env = with_changes({**PRODUCTION_ENV, "APP_ENV": "development"}, changes)
    if "malformed" in message or "every entry" in message or "must start with sk_" in message:
        assert any(p.startswith(message) for p in problems_of(env))  # a malformed value is wrong everywhere
    else:
        load_settings(env)


def test_every_production_guard_at_once() -> None:
    env = {
        "APP_ENV": "production",
        "CORS_ORIGINS": "*",
        "TRUSTED_HOSTS": "*",
        "AUTH_COOKIE_SECURE": "false",
        "DEBUG": "true",
    }
    problems = problems_of(env)
    for prefix in (
        "CORS_ORIGINS",
        "TRUSTED_HOSTS",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_SECRET_KEY",
        "JWT_ISSUER and JWT_AUDIENCE",
        "JWT_SECRET or JWT_JWKS_URL",
        "AUTH_COOKIE_SECURE",
        "DEBUG",
        "DATABASE_URL",
    ):
        assert any(p.startswith(prefix) for p in problems), prefix


def test_describe_masks_secrets() -> None:
    described = describe(load_settings(PRODUCTION_ENV))
    assert described["STRIPE_SECRET_KEY"] == "***"
    assert described["STRIPE_WEBHOOK_SECRET"] == "***"
    assert described["DATABASE_URL"] == "***"
    assert described["JWT_SECRET"] == "***"
    assert described["TRUSTED_HOSTS"] == "api.shop.example"
    assert set(described) == {f.metadata["env"] for f in SETTING_FIELDS}


def test_every_setting_is_documented_once() -> None:
    envs = [f.metadata["env"] for f in SETTING_FIELDS]
    assert len(envs) == len(set(envs))
    for f in SETTING_FIELDS:
        assert f.metadata["doc"].strip(), f.name
        assert f.name in Settings.__dataclass_fields__


# ------------------------------------------------------------------------------------ gateway check-config


def check_config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in SETTING_FIELDS}}
    clean.update(env)
    clean["GATEWAY_ENV_FILE"] = str(tmp_path / "absent.env")  # never read a developer's .env
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_fails_listing_every_problem(tmp_path: Path) -> None:
    result = check_config({"APP_ENV": "production", "CORS_ORIGINS": "*", "TRUSTED_HOSTS": "*", "PORT": "x"}, tmp_path)
    assert result.returncode == 2, result
    for fragment in (
        "CORS_ORIGINS: '*' is refused in production",
        "TRUSTED_HOSTS: '*'",
        "STRIPE_WEBHOOK_SECRET: required in production",
        "STRIPE_SECRET_KEY: required in production",
        "DATABASE_URL: required in production",
        "PORT",
    ):
        assert fragment in result.stderr, fragment
    report: Any = orjson.loads(result.stdout)
    assert report["status"] == "invalid"
    assert len(report["problems"]) >= 6


def test_check_config_passes_with_a_valid_configuration(tmp_path: Path) -> None:
    result = check_config(PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    report: Any = orjson.loads(result.stdout)
    assert report["status"] == "ok"
    assert report["settings"]["APP_ENV"] == "production"
    assert report["settings"]["STRIPE_SECRET_KEY"] == "***"
    assert "sk_live_" not in result.stdout + result.stderr
    assert "whsec_" not in result.stdout + result.stderr


def test_check_config_reads_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "gateway.env"
    env_file.write_text("# comment\nexport PORT=9100\nTRUSTED_HOSTS='api.shop.example'\n", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in {f.metadata["env"] for f in SETTING_FIELDS}}
    clean.update({"GATEWAY_ENV_FILE": str(env_file), "PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    settings = orjson.loads(result.stdout)["settings"]
    assert settings["PORT"] == 9100
    assert settings["TRUSTED_HOSTS"] == "api.shop.example"
