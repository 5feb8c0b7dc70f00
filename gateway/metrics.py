"""Every Prometheus metric of the gateway, declared once. The runbook and the alert rules use these names verbatim.

Metrics are served by a separate listener (`METRICS_PORT`), never by the public app.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BUILD_INFO = Info("gateway_build", "Version of the running gateway")


# The metrics of every answer are updated on every request, so they are kept as plain integers and floats (the
# event loop is their only writer: no lock, no metric object per call) and turned into samples when scraped.
@dataclass(slots=True)
class _Durations:
    buckets: list[int]  # one count per upper bound, then one for +Inf (not cumulative)
    total: float = 0.0


@dataclass(eq=False)  # registered by identity
class HttpMetrics(Collector):
    bounds: tuple[float, ...]
    in_flight: int = 0
    answers: dict[tuple[str, str, int], int] = field(default_factory=dict)
    durations: dict[str, _Durations] = field(default_factory=dict)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.answers[key] = self.answers.get(key, 0) + 1
        durations = self.durations.get(route)
        if durations is None:
            durations = self.durations[route] = _Durations([0] * (len(self.bounds) + 1))
        durations.buckets[bisect_left(self.bounds, seconds)] += 1  # `le` bounds are inclusive
        durations.total += seconds

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "http_requests",
                "HTTP answers by route template, method and status",
                labels=["route", "method", "status"],
            ),
            HistogramMetricFamily(
                "http_request_duration_seconds", "Time to answer, by route template", labels=["route"]
            ),
            GaugeMetricFamily("http_requests_in_flight", "Requests being handled now"),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        answers, histogram, in_flight = self._families()
        for (route, method, status), count in list(self.answers.items()):
            answers.add_metric([route, method, str(status)], count)
        names = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for route, durations in list(self.durations.items()):
            cumulative, buckets = 0, []
            for name, count in zip(names, durations.buckets, strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            histogram.add_metric([route], buckets, durations.total)
        in_flight.add_metric([], self.in_flight)
        return iter((answers, histogram, in_flight))


HTTP = HttpMetrics(LATENCY_BUCKETS)
REGISTRY.register(HTTP)

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
    "Webhook events by type and outcome (processed, duplicate, ignored, stale, waiting, failed, received)",
    ["type", "outcome"],
)
WEBHOOK_RETRIES = Counter(
    "stripe_webhook_retries_total",
    "Deliveries whose transaction was retried after a deadlock or serialization failure, or refused because a "
    "row stayed locked (LockNotAvailableError), by error",
    ["error"],
)
WEBHOOK_UNSTORABLE = Counter(
    "stripe_webhook_unstorable_total",
    "Verified events PostgreSQL cannot store as sent (NUL, lone surrogate, nesting, impossible time), recorded "
    "ignored with their raw bytes, by reason",
    ["reason"],
)
WEBHOOK_KEPT_APPLIED = Counter(
    "stripe_webhook_kept_applied_total",
    "Kept (waiting) events applied when their order became known, by Stripe event type",
    ["type"],
)
WEBHOOK_WAITING_OLDEST = Gauge(
    "stripe_webhook_waiting_oldest_seconds",
    "Age of the oldest kept event still waiting for its order (0: none)",
)
DISPUTE_EVIDENCE_DUE = Gauge(
    "stripe_dispute_evidence_due_seconds",
    "Time left until the earliest evidence due date of a dispute that needs a response (absent: none)",
)
DISPUTES_OPEN = Gauge("stripe_disputes_open", "Disputes not closed yet, by status", ["status"])
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
    "stripe_webhook_ledger_rows",
    "Ledger rows not applied yet, by status (failed, received, waiting)",
    ["status"],
)
OUTBOX_BACKLOG = Gauge("bridge_outbox_backlog", "Bridge events not yet relayed")
# --- the background refresh of database-backed gauges (gateway/metrics_refresh.py, issue 20) ---
METRICS_REFRESH_ERRORS = Counter(
    "gateway_metrics_refresh_errors_total",
    "Failed refreshes of the database-backed gauges (they keep their last values), by reason",
    ["reason"],
)
METRICS_REFRESH_AGE = Gauge(
    "gateway_metrics_refresh_age_seconds", "Seconds since the database-backed gauges were last refreshed"
)
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
EMAILS_WAITING_ADDRESS = Gauge(
    "emails_waiting_address", "Order e-mails of paid orders waiting for the buyer's address (the payment came first)"
)
EMAILS_FAILED = Counter(
    "emails_failed_total",
    "Failed e-mail attempts, by kind and outcome (retry, gave_up, no_recipient)",
    ["kind", "outcome"],
)

# --- hostile and careless clients (issue 21) ---
WEBHOOK_UNSIGNED = Counter(
    "stripe_webhook_unsigned_total",
    "Webhook deliveries without a well-formed Stripe-Signature (missing or malformed header): noise, never a "
    "secret problem; by reason",
    ["reason"],
)
LOGIN_FAILURES = Counter(
    "auth_login_failures_total",
    "Refused logins, by reason (invalid_request, unknown_account, wrong_password, disabled_account, "
    "limited_account_address, limited_account)",
    ["reason"],
)
CONNECTIONS_OPEN = Gauge("gateway_connections_open", "Connections open on the public listener of this process")
CONNECTIONS_REFUSED = Counter(
    "gateway_connections_refused_total", "Connections answered 503 and closed beyond HTTP_MAX_CONNECTIONS"
)
SLOW_CLIENTS = Counter(
    "gateway_slow_clients_total",
    "Requests answered 408 because the client was too slow, by phase (head: HTTP_HEAD_TIMEOUT_SECONDS, body: "
    "HTTP_BODY_TIMEOUT_SECONDS)",
    ["phase"],
)

# --- Stripe account operations (gateway/stripe_account/, gateway/stripe_client.py)
STRIPE_API_RATE_LIMITED = Counter(
    "stripe_requests_rate_limited_total", "Stripe API calls answered 429 (rate limited), by operation", ["operation"]
)
STRIPE_EVENT_API_VERSIONS = Counter(
    "stripe_webhook_event_api_versions_total",
    "Webhook events by their Stripe api_version, and whether it is STRIPE_API_VERSION (pinned: true/false)",
    ["api_version", "pinned"],
)
STRIPE_WATCHDOG_RUNS = Counter(
    "stripe_watchdog_runs_total",
    "Missed-webhook watchdog rounds, by outcome (ok, error, locked: another replica held the lock)",
    ["outcome"],
)
STRIPE_WATCHDOG_MISSED = Counter(
    "stripe_watchdog_missed_events_total",
    "Events of handled types that Stripe's Events API lists and the ledger lacked, fed in by the watchdog",
)
STRIPE_WATCHDOG_LAST_MISSED = Gauge(
    "stripe_watchdog_last_missed_events", "Missed events the last completed watchdog round of this process found"
)
STRIPE_WATCHDOG_OLDEST_MISSED_AGE = Gauge(
    "stripe_watchdog_oldest_missed_age_seconds",
    "Age of the oldest missed event the last completed watchdog round found (0: none)",
)
STRIPE_WATCHDOG_LAST_SUCCESS = Gauge(
    "stripe_watchdog_last_success_timestamp_seconds", "Unix time of this process's last completed watchdog round"
)
