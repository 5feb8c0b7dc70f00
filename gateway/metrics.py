"""Every Prometheus metric of the gateway, declared once. The runbook and the alert rules use these names verbatim.

Metrics are served by a separate listener (`METRICS_PORT`), never by the public app.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BUILD_INFO = Info("gateway_build", "Version of the running gateway")

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP answers by route template, method and status", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to answer, by route template", ["route"], buckets=LATENCY_BUCKETS
)
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being handled now")
READY = Gauge("gateway_ready", "1 when /ready would answer 200")

RATE_LIMITED = Counter("rate_limited_total", "Requests refused by the rate limiter, by policy", ["policy"])
RATE_LIMIT_STORE_ERRORS = Counter(
    "rate_limit_store_errors_total",
    "Rate-limit store failures, by store and decision taken",
    ["store", "decision"],
)

DB_POOL_SIZE = Gauge("db_pool_size", "Connections open in the asyncpg pool")
DB_POOL_IN_USE = Gauge("db_pool_in_use", "Connections of the pool currently acquired")
DB_POOL_MAX = Gauge("db_pool_max", "Largest size the pool may reach")

WEBHOOK_RESPONSES = Counter(
    "stripe_webhook_responses_total", "Every answer of the webhook route, by HTTP status", ["status"]
)
WEBHOOK_EVENTS = Counter(
    "stripe_webhook_events_total",
    "Webhook events by type and outcome (processed, duplicate, ignored, stale, failed, received)",
    ["type", "outcome"],
)
WEBHOOK_PROCESSING = Histogram(
    "stripe_webhook_processing_seconds",
    "Time from a verified body to the committed ledger row",
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_DELIVERY_LAG = Histogram(
    "stripe_webhook_delivery_lag_seconds",
    "Now minus the event's Stripe `created` time at arrival",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600),
)
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "stripe_webhook_signature_failures_total", "Stripe-Signature verification failures, by reason", ["reason"]
)
WEBHOOK_SECRET_MATCHES = Counter(
    "stripe_webhook_secret_matches_total",
    "Verified deliveries by the position of the matching secret in STRIPE_WEBHOOK_SECRET (0 = first)",
    ["secret_index"],
)
LEDGER_ROWS = Gauge(
    "stripe_webhook_ledger_rows", "Ledger rows waiting for action, by status (failed, received)", ["status"]
)
OUTBOX_BACKLOG = Gauge("bridge_outbox_backlog", "Bridge events not yet relayed")
RESERVATIONS_RELEASED = Counter(
    "stock_reservations_released_total", "Stock reservations released, by reason", ["reason"]
)

# --- subscriptions, event bridge, relay, order e-mails (issue 4) ---
BRIDGE_EVENTS_PUBLISHED = Counter(
    "bridge_events_published_total", "Bridge events written to the outbox, by event type", ["type"]
)
SUBSCRIPTION_UNRESOLVED_USERS = Counter(
    "subscription_events_unresolved_user_total",
    "Subscription events applied and published with user_id null (no user found), by Stripe event type",
    ["type"],
)
SUBSCRIPTION_UNKNOWN_PRICES = Counter(
    "subscription_unknown_price_total", "Subscription prices missing from PLANS_FILE (plan `unknown`)"
)
BRIDGE_RELAY_LAG_SECONDS = Gauge(
    "bridge_relay_lag_seconds",
    "Age of the oldest bridge event not yet copied to the external bridge (0: none)",
)
BRIDGE_RELAYED = Counter("bridge_relay_events_total", "Bridge events copied to the external bridge database")
BRIDGE_RELAY_ERRORS = Counter("bridge_relay_errors_total", "Failed relay rounds, by side (source, target)", ["side"])
EMAILS_SENT = Counter("emails_sent_total", "E-mails accepted by the SMTP server, by kind", ["kind"])
EMAILS_FAILED = Counter(
    "emails_failed_total",
    "Failed e-mail attempts, by kind and outcome (retry, gave_up, no_recipient)",
    ["kind", "outcome"],
)
