"""Settings: one frozen object, parsed once from the environment (and an optional `.env` file).

Every setting is declared once below as a dataclass field whose metadata carries its environment variable and its
documentation; the README table and `.env.example` are checked against this list by the test suite.
Every problem found while parsing is reported together in one `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

AppEnv = Literal["development", "test", "production"]

DEFAULT_STRIPE_API_VERSION = "2025-03-31.basil"


class ConfigError(Exception):
    """Raised with every configuration problem at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def setting(env: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    if isinstance(default, list | tuple):
        value = tuple(default)
        return field(default=value, metadata={"env": env, "doc": doc, "secret": secret})
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    # --- runtime ---
    app_env: AppEnv = setting("APP_ENV", "development", "development, test or production")
    debug: bool = setting("DEBUG", False, "Verbose errors (tracebacks in 500 bodies); refused in production")
    host: str = setting("HOST", "0.0.0.0", "Address the public API listens on")  # noqa: S104
    port: int = setting("PORT", 8080, "Port of the public API")
    workers: int = setting("WORKERS", 1, "Processes sharing the port through SO_REUSEPORT")
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1", "Address of the metrics listener (not public)")
    metrics_port: int = setting("METRICS_PORT", 9102, "Port of the Prometheus metrics listener; 0 disables it")
    log_level: str = setting("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")
    metrics_refresh_interval_seconds: float = setting(
        "METRICS_REFRESH_INTERVAL_SECONDS", 15.0, "Period of the background refresh of database-backed gauges"
    )
    shutdown_drain_seconds: float = setting(
        "SHUTDOWN_DRAIN_SECONDS", 5.0, "After SIGTERM: seconds /ready answers 503 while still serving"
    )
    shutdown_timeout_seconds: float = setting(
        "SHUTDOWN_TIMEOUT_SECONDS", 15.0, "After the drain: seconds in-flight requests get to finish"
    )
    # --- database ---
    database_url: str | None = setting(
        "DATABASE_URL",
        None,
        "PostgreSQL URL; unset starts an embedded PostgreSQL in GATEWAY_DATA_DIR",
        secret=True,
    )
    data_dir: str = setting("GATEWAY_DATA_DIR", "./.data", "Folder of the embedded PostgreSQL data")
    db_pool_min: int = setting("DB_POOL_MIN", 2, "Minimum connections in the pool")
    db_pool_max: int = setting("DB_POOL_MAX", 10, "Maximum connections in the pool")
    db_command_timeout: float = setting("DB_COMMAND_TIMEOUT", 5.0, "Seconds before a statement is abandoned")
    db_acquire_timeout: float = setting(
        "DB_ACQUIRE_TIMEOUT", 5.0, "Seconds to wait for a pooled connection before answering 503"
    )
    db_lock_timeout: float = setting(
        "DB_LOCK_TIMEOUT",
        3.0,
        "Seconds a statement waits for a row lock before giving up (webhook: 503 rows_busy); below DB_COMMAND_TIMEOUT",
    )
    ready_db_timeout: float = setting("READY_DB_TIMEOUT", 1.0, "Seconds /ready waits for the database")
    # --- edge hardening ---
    trusted_hosts: tuple[str, ...] = setting(
        "TRUSTED_HOSTS",
        ["localhost", "127.0.0.1", "::1"],
        "Accepted Host names (comma list, *.example.com wildcards)",
    )
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES", [], "CIDRs of proxies whose X-Forwarded-For / X-Forwarded-Proto are believed"
    )
    cors_origins: tuple[str, ...] = setting("CORS_ORIGINS", [], "Browser origins allowed by CORS (comma list)")
    json_body_limit: int = setting("JSON_BODY_LIMIT", 102_400, "Largest JSON request body in bytes")
    webhook_body_limit: int = setting("WEBHOOK_BODY_LIMIT", 524_288, "Largest webhook body in bytes")
    # --- slow and greedy clients (gateway/connections.py) ---
    http_head_timeout_seconds: float = setting(
        "HTTP_HEAD_TIMEOUT_SECONDS", 10.0, "Seconds a new connection has to send a complete request head (408)"
    )
    http_body_timeout_seconds: float = setting(
        "HTTP_BODY_TIMEOUT_SECONDS", 30.0, "Seconds a request body may take to arrive once invited (408)"
    )
    http_keepalive_timeout_seconds: float = setting(
        "HTTP_KEEPALIVE_TIMEOUT_SECONDS",
        75.0,
        "Seconds an idle keep-alive connection stays open (and the next request head may take); keep it above "
        "the ingress's upstream idle timeout",
    )
    http_max_connections: int = setting(
        "HTTP_MAX_CONNECTIONS", 1000, "Open connections per process; beyond it a connection gets 503 and is closed"
    )
    # --- rate limits ---
    rate_limit_store: Literal["memory", "redis"] = setting(
        "RATE_LIMIT_STORE", "memory", "memory (per process) or redis (shared by replicas, needs REDIS_URL)"
    )
    redis_url: str | None = setting("REDIS_URL", None, "Redis URL for the shared rate-limit store", secret=True)
    rate_limit_fail_open: bool = setting(
        "RATE_LIMIT_FAIL_OPEN", True, "On a Redis error let the request through (true) or answer 503 (false)"
    )
    rate_limit_max_keys: int = setting(
        "RATE_LIMIT_MAX_KEYS", 100_000, "Most client keys the in-process store keeps (oldest evicted first)"
    )
    rate_limit_webhook_max: int = setting(
        "RATE_LIMIT_WEBHOOK_MAX", 100, "Webhook deliveries per minute per client IP (bucket capacity too)"
    )
    rate_limit_public_max: int = setting("RATE_LIMIT_PUBLIC_MAX", 60, "Public requests per minute per client IP")
    rate_limit_auth_max: int = setting(
        "RATE_LIMIT_AUTH_MAX", 10, "Login/refresh attempts per minute per client IP, and per account and client IP"
    )
    rate_limit_auth_account_max: int = setting(
        "RATE_LIMIT_AUTH_ACCOUNT_MAX",
        100,
        "Login attempts per minute per account from all addresses together (a stranger cannot lock the owner out)",
    )
    rate_limit_checkout_max: int = setting("RATE_LIMIT_CHECKOUT_MAX", 10, "Checkout sessions per minute per user")
    # --- JWT ---
    jwt_algorithms: tuple[str, ...] = setting("JWT_ALGORITHMS", ["HS256"], "Accepted JWT algorithms (allowlist)")
    jwt_secret: str | None = setting("JWT_SECRET", None, "HS256 key (at least 32 bytes)", secret=True)
    jwt_jwks_url: str | None = setting("JWT_JWKS_URL", None, "JWKS URL for RS256/ES256 tokens of an identity provider")
    jwt_issuer: str | None = setting("JWT_ISSUER", None, "Required `iss` claim")
    jwt_audience: str | None = setting("JWT_AUDIENCE", None, "Required `aud` claim")
    jwt_leeway_seconds: int = setting("JWT_LEEWAY_SECONDS", 30, "Clock skew tolerated on exp/iat/nbf")
    jwt_roles_claim: str = setting(
        "JWT_ROLES_CLAIM", "roles", "Dotted path of the roles claim (e.g. app_metadata.roles)"
    )
    jwks_cache_seconds: int = setting("JWKS_CACHE_SECONDS", 300, "How long fetched JWKS keys are kept")
    jwks_refetch_cooldown_seconds: int = setting(
        "JWKS_REFETCH_COOLDOWN_SECONDS", 30, "Least seconds between two JWKS fetches for an unknown kid"
    )
    # --- Stripe ---
    stripe_secret_key: str | None = setting("STRIPE_SECRET_KEY", None, "Stripe API key (sk_... or rk_...)", secret=True)
    stripe_webhook_secrets: tuple[str, ...] = setting(
        "STRIPE_WEBHOOK_SECRET",
        [],
        "Webhook signing secrets, comma list (two during a rotation)",
        secret=True,
    )
    stripe_webhook_tolerance: int = setting(
        "STRIPE_WEBHOOK_TOLERANCE", 300, "Seconds a Stripe-Signature timestamp may differ from now"
    )
    stripe_api_version: str = setting(
        "STRIPE_API_VERSION", DEFAULT_STRIPE_API_VERSION, "Pinned Stripe API version (YYYY-MM-DD or YYYY-MM-DD.name)"
    )
    stripe_api_base: str = setting(
        "STRIPE_API_BASE", "https://api.stripe.com", "Base URL of Stripe's API (a local fake in tests)"
    )
    stripe_livemode: bool | None = setting(
        "STRIPE_LIVEMODE",
        None,
        "true: refuse test-mode events; false: refuse live events; unset: accept both",
    )
    stripe_webhook_path: str = setting("STRIPE_WEBHOOK_PATH", "/stripe/webhook", "Path of the webhook route")
    webhook_handlers_enabled: bool = setting(
        "WEBHOOK_HANDLERS_ENABLED",
        True,
        "Kill switch: false records verified events as received, changes nothing",
    )
    app_source: str = setting("APP_SOURCE", "website", "`app_source` written on bridge events")
    stripe_webhook_url: str | None = setting(
        "STRIPE_WEBHOOK_URL",
        None,
        "Public URL of the webhook endpoint in Stripe (`gateway stripe endpoint ensure/check` without --url)",
    )
    stripe_watchdog_interval_seconds: float = setting(
        "STRIPE_WATCHDOG_INTERVAL_SECONDS",
        300.0,
        "Period of the missed-webhook watchdog (Events API vs ledger, one replica at a time); 0 disables",
    )
    stripe_watchdog_lookback_seconds: int = setting(
        "STRIPE_WATCHDOG_LOOKBACK_SECONDS", 3600, "How far back each watchdog round lists Stripe's events (max 30 days)"
    )
    # --- stock ---
    reservation_ttl_seconds: int = setting(
        "RESERVATION_TTL_SECONDS", 1800, "How long checkout stock stays held (Stripe's minimum is 1800)"
    )
    checkout_max_held_units_per_user: int = setting(
        "CHECKOUT_MAX_HELD_UNITS_PER_USER", 20, "Units one user's open checkouts may hold together (409 beyond)"
    )
    checkout_max_open_sessions_per_user: int = setting(
        "CHECKOUT_MAX_OPEN_SESSIONS_PER_USER", 3, "Open checkouts holding stock per user (409 beyond)"
    )
    checkout_max_held_units_per_address: int = setting(
        "CHECKOUT_MAX_HELD_UNITS_PER_ADDRESS",
        60,
        "Units the open checkouts of one client address (IPv6 by /64) may hold together, whatever the user",
    )
    reservation_sweep_interval_seconds: float = setting(
        "RESERVATION_SWEEP_INTERVAL_SECONDS",
        60.0,
        "Period of the sweeper releasing expired reservations; 0 disables",
    )
    # --- local accounts ---
    auth_cookie_secure: bool = setting("AUTH_COOKIE_SECURE", True, "Secure flag of the refresh cookie")
    # --- checkout API and local accounts ---
    checkout_success_url: str = setting(
        "CHECKOUT_SUCCESS_URL",
        "http://localhost:3000/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "Default Stripe Checkout success_url (a body's success_url must be on CORS_ORIGINS or this origin)",
    )
    checkout_cancel_url: str = setting(
        "CHECKOUT_CANCEL_URL", "http://localhost:3000/cart", "Default Stripe Checkout cancel_url (same rule)"
    )
    stripe_timeout_seconds: float = setting(
        "STRIPE_TIMEOUT_SECONDS", 10.0, "Seconds a Stripe API call may take before checkout gives up (502)"
    )
    # --- billing: subscription checkout, plan changes, portal, promotion codes, tax ---
    checkout_allow_promotion_codes: bool = setting(
        "CHECKOUT_ALLOW_PROMOTION_CODES", False, "Checkout shows Stripe's promotion code field"
    )
    checkout_automatic_tax: bool = setting(
        "CHECKOUT_AUTOMATIC_TAX", False, "Stripe Tax computes the tax of every checkout (automatic_tax)"
    )
    checkout_tax_id_collection: bool = setting(
        "CHECKOUT_TAX_ID_COLLECTION", False, "Checkout lets the customer enter a tax ID (e.g. an EU VAT number)"
    )
    subscription_proration_behavior: Literal["create_prorations", "none", "always_invoice"] = setting(
        "SUBSCRIPTION_PRORATION_BEHAVIOR",
        "create_prorations",
        "Plan changes: create_prorations, none or always_invoice (Stripe's proration_behavior)",
    )
    subscription_cancel_now_allowed: bool = setting(
        "SUBSCRIPTION_CANCEL_NOW_ALLOWED", True, "Users may cancel a subscription immediately (else period end only)"
    )
    billing_portal_return_urls: tuple[str, ...] = setting(
        "BILLING_PORTAL_RETURN_URLS",
        ["http://localhost:3000/account"],
        "Allowed return URLs of the customer portal (comma list; the first is the default)",
    )
    auth_local_enabled: bool = setting(
        "AUTH_LOCAL_ENABLED", False, "Local accounts: /v1/auth/login, /refresh, /logout and `gateway users`"
    )
    auth_local_jwt_secret: str | None = setting(
        "AUTH_LOCAL_JWT_SECRET",
        None,
        "HS256 key of the gateway's tokens (>= 32 bytes; unset: JWT_SECRET)",
        secret=True,
    )
    auth_local_issuer: str = setting("AUTH_LOCAL_ISSUER", "stripe-gateway", "`iss` of the gateway's JWTs")
    auth_local_audience: str = setting("AUTH_LOCAL_AUDIENCE", "stripe-gateway", "`aud` of the gateway's JWTs")
    auth_access_token_ttl_seconds: int = setting(
        "AUTH_ACCESS_TOKEN_TTL_SECONDS", 900, "Lifetime of a local access token (JWT)"
    )
    auth_refresh_token_ttl_seconds: int = setting(
        "AUTH_REFRESH_TOKEN_TTL_SECONDS", 1_209_600, "Lifetime of a refresh token; each refresh renews it"
    )
    # --- subscriptions, event bridge relay, order e-mails ---
    plans_file: str = setting(
        "PLANS_FILE", "config/plans.yaml", "YAML mapping Stripe price_id -> plan_id, validated at boot"
    )
    event_bridge_database_url: str | None = setting(
        "EVENT_BRIDGE_DATABASE_URL",
        None,
        "PostgreSQL URL of the external event bridge (e.g. Supabase); unset: no relay",
        secret=True,
    )
    bridge_relay_interval_seconds: float = setting(
        "BRIDGE_RELAY_INTERVAL_SECONDS", 5.0, "Longest wait between two relay rounds (NOTIFY wakes it sooner)"
    )
    bridge_relay_batch_size: int = setting("BRIDGE_RELAY_BATCH_SIZE", 500, "Bridge events copied per relay round")
    smtp_url: str | None = setting(
        "SMTP_URL",
        None,
        "smtp://[user:pass@]host[:port][?starttls=true] or smtps://...; unset: no order e-mails",
        secret=True,
    )
    smtp_sender: str | None = setting("SMTP_SENDER", None, "From address of order e-mails (required with SMTP_URL)")
    order_email_subject: str = setting(
        "ORDER_EMAIL_SUBJECT", "Your order is confirmed", "Subject of the order confirmation e-mail"
    )
    order_email_template: str | None = setting(
        "ORDER_EMAIL_TEMPLATE",
        None,
        "Text template file ($order_id, $amount, $currency); unset: built-in text",
    )
    email_max_attempts: int = setting(
        "EMAIL_MAX_ATTEMPTS", 8, "Attempts per e-mail before giving up (exponential backoff between them)"
    )
    email_poll_interval_seconds: float = setting(
        "EMAIL_POLL_INTERVAL_SECONDS",
        5.0,
        "Longest wait between two notifier rounds (NOTIFY wakes it sooner)",
    )

    # ----- derived -----
    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


SETTING_FIELDS: tuple[dataclasses.Field[Any], ...] = tuple(dataclasses.fields(Settings))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse(annotation: Any, raw: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if raw.strip() == "":
            return None
        return _parse(inner[0], raw)
    if origin is Literal:
        value = raw.strip().lower()
        if value not in args:
            raise ValueError(f"must be one of {', '.join(args)}")
        return value
    if origin is tuple:
        return _split_list(raw)
    if annotation is bool:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError("must be true or false")
    if annotation is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"must be an integer, not {raw.strip()!r}") from None
    if annotation is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"must be a number, not {raw.strip()!r}") from None
    return raw.strip()


def read_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (comments and blank lines skipped, optional quotes removed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def read_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[Settings, list[str]]:
    """Parse and validate every setting: the settings (a value that does not parse keeps its default) and every
    problem found.

    `overrides` (by environment name, e.g. the command line's `--port`) win over the environment and go through
    the same parsing and validation."""
    if environ is None:
        source = read_env_file(env_file or Path(os.environ.get("GATEWAY_ENV_FILE", ".env")))
        source.update(os.environ)
    else:
        source = dict(environ)
    source.update(overrides or {})
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in SETTING_FIELDS:
        env = f.metadata["env"]
        if env not in source:
            continue
        try:
            values[f.name] = _parse(hints[f.name], source[env])
        except ValueError as exc:
            problems.append(f"{env}: {exc}")
    settings = Settings(**values)
    problems.extend(validate(settings))
    return settings, problems


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """`read_settings`, raising ConfigError listing every problem."""
    settings, problems = read_settings(environ, env_file=env_file, overrides=overrides)
    if problems:
        raise ConfigError(problems)
    return settings


_SECRET_PREFIX = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]+$")
# Stripe's API versions: a release date, since 2024-09-30 followed by the release's name (`2025-03-31.basil`).
_API_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[a-z]+)?$")


def _is_api_version(value: str) -> bool:
    match = _API_VERSION.match(value)
    if match is None:
        return False
    try:
        datetime.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def validate(s: Settings) -> list[str]:
    """Checks that hold for every environment, plus the production guards."""
    problems: list[str] = []
    if not 1 <= s.port <= 65535:
        problems.append("PORT: must be between 1 and 65535")
    if not 0 <= s.metrics_port <= 65535:
        problems.append("METRICS_PORT: must be between 0 and 65535")
    if s.metrics_port and s.metrics_port == s.port:
        problems.append("METRICS_PORT: must differ from PORT (metrics are never served on the public port)")
    if s.workers < 1:
        problems.append("WORKERS: must be at least 1")
    if s.metrics_refresh_interval_seconds <= 0:
        problems.append("METRICS_REFRESH_INTERVAL_SECONDS: must be positive")
    if s.db_pool_min < 0 or s.db_pool_max < max(1, s.db_pool_min):
        problems.append("DB_POOL_MAX: must be at least 1 and at least DB_POOL_MIN")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        problems.append("LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
    for name, value in (
        ("JSON_BODY_LIMIT", s.json_body_limit),
        ("WEBHOOK_BODY_LIMIT", s.webhook_body_limit),
        ("RATE_LIMIT_WEBHOOK_MAX", s.rate_limit_webhook_max),
        ("RATE_LIMIT_PUBLIC_MAX", s.rate_limit_public_max),
        ("RATE_LIMIT_AUTH_MAX", s.rate_limit_auth_max),
        ("RATE_LIMIT_AUTH_ACCOUNT_MAX", s.rate_limit_auth_account_max),
        ("RATE_LIMIT_CHECKOUT_MAX", s.rate_limit_checkout_max),
        ("RATE_LIMIT_MAX_KEYS", s.rate_limit_max_keys),
        ("STRIPE_WEBHOOK_TOLERANCE", s.stripe_webhook_tolerance),
        ("HTTP_HEAD_TIMEOUT_SECONDS", s.http_head_timeout_seconds),
        ("HTTP_BODY_TIMEOUT_SECONDS", s.http_body_timeout_seconds),
        ("HTTP_KEEPALIVE_TIMEOUT_SECONDS", s.http_keepalive_timeout_seconds),
        ("HTTP_MAX_CONNECTIONS", s.http_max_connections),
        ("CHECKOUT_MAX_HELD_UNITS_PER_USER", s.checkout_max_held_units_per_user),
        ("CHECKOUT_MAX_OPEN_SESSIONS_PER_USER", s.checkout_max_open_sessions_per_user),
        ("CHECKOUT_MAX_HELD_UNITS_PER_ADDRESS", s.checkout_max_held_units_per_address),
    ):
        if value <= 0:
            problems.append(f"{name}: must be positive")
    if not 0 < s.db_lock_timeout < s.db_command_timeout:
        problems.append("DB_LOCK_TIMEOUT: must be positive and below DB_COMMAND_TIMEOUT")
    if s.stripe_watchdog_interval_seconds < 0:
        problems.append("STRIPE_WATCHDOG_INTERVAL_SECONDS: must be 0 (off) or positive")
    if not 300 <= s.stripe_watchdog_lookback_seconds <= 30 * 86400:
        problems.append("STRIPE_WATCHDOG_LOOKBACK_SECONDS: must be between 300 and 2592000 (Stripe keeps 30 days)")
    if s.stripe_webhook_url is not None and not s.stripe_webhook_url.startswith(("https://", "http://")):
        problems.append("STRIPE_WEBHOOK_URL: must be an http(s):// URL")
    if s.rate_limit_store == "redis" and not s.redis_url:
        problems.append("REDIS_URL: required when RATE_LIMIT_STORE=redis")
    for cidr in s.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f"TRUSTED_PROXIES: {cidr!r} is not a CIDR")
    for origin in s.cors_origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            problems.append(f"CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port], no path)")
    unknown_algs = set(s.jwt_algorithms) - {
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "ES256",
        "ES384",
        "PS256",
    }
    if unknown_algs or not s.jwt_algorithms:
        problems.append("JWT_ALGORITHMS: allowed values are HS256/384/512, RS256/384/512, ES256/384, PS256")
    if s.jwt_secret is not None and len(s.jwt_secret.encode()) < 32:
        problems.append("JWT_SECRET: must be at least 32 bytes")
    if s.jwt_secret and any(a.startswith(("RS", "ES", "PS")) for a in s.jwt_algorithms) and not s.jwt_jwks_url:
        problems.append("JWT_ALGORITHMS: asymmetric algorithms need JWT_JWKS_URL")
    for secret in s.stripe_webhook_secrets:
        if not secret.startswith("whsec_") or len(secret) < 12:
            problems.append("STRIPE_WEBHOOK_SECRET: every entry must start with whsec_")
            break
    if not _is_api_version(s.stripe_api_version):
        problems.append("STRIPE_API_VERSION: must be a Stripe API version such as 2025-03-31.basil (YYYY-MM-DD[.name])")
    if s.stripe_secret_key and not _SECRET_PREFIX.match(s.stripe_secret_key):
        problems.append("STRIPE_SECRET_KEY: must start with sk_test_, sk_live_, rk_test_ or rk_live_")
    if not s.stripe_webhook_path.startswith("/"):
        problems.append("STRIPE_WEBHOOK_PATH: must start with /")
    if s.reservation_ttl_seconds < 60:
        problems.append("RESERVATION_TTL_SECONDS: must be at least 60")
    if not s.billing_portal_return_urls:
        problems.append("BILLING_PORTAL_RETURN_URLS: at least one URL is required")
    for url in s.billing_portal_return_urls:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
            problems.append(f"BILLING_PORTAL_RETURN_URLS: {url!r} is not an absolute http(s) URL")
    if s.is_production:
        problems.extend(_production_guards(s))
    return problems


def _production_guards(s: Settings) -> list[str]:
    problems: list[str] = []
    if "*" in s.cors_origins:
        problems.append("CORS_ORIGINS: '*' is refused in production; list the frontend origins")
    if "*" in s.trusted_hosts or not s.trusted_hosts:
        problems.append("TRUSTED_HOSTS: '*' or an empty list is refused in production; list the served host names")
    if not s.stripe_webhook_secrets:
        problems.append("STRIPE_WEBHOOK_SECRET: required in production")
    if not s.stripe_secret_key:
        problems.append("STRIPE_SECRET_KEY: required in production")
    if not s.jwt_issuer or not s.jwt_audience:
        problems.append("JWT_ISSUER and JWT_AUDIENCE: required in production")
    if not s.jwt_secret and not s.jwt_jwks_url:
        problems.append("JWT_SECRET or JWT_JWKS_URL: a key source is required in production")
    if s.jwt_jwks_url and not s.jwt_jwks_url.startswith("https://"):
        problems.append("JWT_JWKS_URL: must be an https:// URL in production")
    if not s.auth_cookie_secure:
        problems.append("AUTH_COOKIE_SECURE: the refresh cookie must be Secure in production")
    if s.debug:
        problems.append("DEBUG: must be off in production")
    if not s.database_url:
        problems.append("DATABASE_URL: required in production (the embedded database is for development)")
    return problems


def describe(s: Settings) -> dict[str, Any]:
    """The effective settings with secrets masked, for `gateway check-config`."""
    out: dict[str, Any] = {}
    for f in SETTING_FIELDS:
        value = getattr(s, f.name)
        if f.metadata["secret"] and value:
            value = "***"
        elif isinstance(value, tuple):
            value = ",".join(value)
        out[f.metadata["env"]] = value
    return out
