"""The webhook endpoint in Stripe, as the code needs it: `gateway stripe endpoint ensure` and `check`.

What the code needs is derived, never listed: the event types are the keys of the dispatch table
(`gateway.webhooks.handlers.HANDLERS`), so a handler added there is subscribed at the next `ensure`, and `check`
fails in the deploy pipeline until it is. The version is STRIPE_API_VERSION.

Stripe lets an endpoint's URL, events and status be updated, but not its `api_version`: an endpoint of another
version is replaced by a new one at the same URL (new signing secret). The replacement is created disabled while
the old endpoint still delivers; once its secret is in STRIPE_WEBHOOK_SECRET, the next `ensure` enables it and
disables the old one. After `ensure`, the URL has exactly one enabled endpoint: the pinned version, the handled
types.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import stripe

from gateway.stripe_client import DEFAULT_BACKOFF, Backoff
from gateway.webhooks.handlers import HANDLERS

PAGE_SIZE = 100
DESCRIPTION = "stripe-gateway"
METADATA = {"managed_by": "stripe-gateway"}


def handled_event_types() -> list[str]:
    """The event types the handlers take, sorted: exactly the endpoint's `enabled_events`."""
    return sorted(HANDLERS)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    url: str
    api_version: str
    enabled_events: tuple[str, ...]

    @classmethod
    def for_url(cls, url: str, api_version: str) -> EndpointSpec:
        return cls(url, api_version, tuple(handled_event_types()))


@dataclass(frozen=True, slots=True)
class Difference:
    code: str  # missing_endpoint, api_version, missing_event_types, extra_event_types, disabled, superseded_enabled
    detail: str
    endpoint: str | None = None
    values: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"code": self.code, "detail": self.detail, "endpoint": self.endpoint}
        if self.values:
            found["values"] = list(self.values)
        return found


@dataclass(slots=True)
class EndpointReport:
    url: str
    api_version: str
    endpoint: str | None = None
    differences: list[Difference] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    secret: str | None = None  # only when this run created the endpoint (Stripe shows it once)
    next_steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "url": self.url,
            "api_version": self.api_version,
            "endpoint": self.endpoint,
            "status": "drifted" if self.differences else "ok",
            "differences": [d.as_dict() for d in self.differences],
        }
        if self.changes:
            found["changes"] = self.changes
        if self.secret is not None:
            found["secret"] = self.secret
        if self.next_steps:
            found["next_steps"] = self.next_steps
        return found


# ------------------------------------------------------------------ reading


def _raw(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict())


async def endpoints_at(
    client: stripe.StripeClient, url: str, *, backoff: Backoff = DEFAULT_BACKOFF
) -> list[dict[str, Any]]:
    """Every webhook endpoint of the account whose URL is `url` (all pages), newest first."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    while True:
        page = await backoff.call(
            "webhook_endpoints.list",
            functools.partial(client.v1.webhook_endpoints.list_async, params=dict(params)),  # type: ignore[arg-type]
        )
        items = [_raw(item) for item in page.data]
        found.extend(item for item in items if item.get("url") == url)
        if not page.has_more or not items:
            return found
        params["starting_after"] = items[-1]["id"]


def _current(spec: EndpointSpec, endpoints: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The endpoint that stands for the code at the URL: the pinned version (an enabled one first)."""
    pinned = [e for e in endpoints if e.get("api_version") == spec.api_version]
    pinned.sort(key=lambda e: e.get("status") != "enabled")
    return pinned[0] if pinned else None


def compare(spec: EndpointSpec, endpoints: list[dict[str, Any]]) -> list[Difference]:
    """What differs between the endpoints at the spec's URL and the code."""
    if not endpoints:
        return [Difference("missing_endpoint", f"no webhook endpoint has the URL {spec.url}")]
    current = _current(spec, endpoints)
    differences: list[Difference] = []
    if current is None:
        # No endpoint of the pinned version: compare the one delivering now (an enabled one first).
        live = sorted(endpoints, key=lambda e: e.get("status") != "enabled")[0]
        differences.append(
            Difference(
                "api_version",
                f"the endpoint renders events in {live.get('api_version') or 'the account default version'}, "
                f"not STRIPE_API_VERSION {spec.api_version} (an endpoint's version cannot change: ensure replaces it)",
                live["id"],
                (str(live.get("api_version")),),
            )
        )
    else:
        live = current
    enabled = set(live.get("enabled_events") or [])
    wanted = set(spec.enabled_events)
    if missing := sorted(wanted - enabled):
        differences.append(
            Difference(
                "missing_event_types",
                "event types the handlers take but Stripe does not send",
                live["id"],
                tuple(missing),
            )
        )
    if extra := sorted(enabled - wanted):
        differences.append(
            Difference("extra_event_types", "event types Stripe sends that no handler takes", live["id"], tuple(extra))
        )
    if live.get("status") != "enabled":
        differences.append(Difference("disabled", "the endpoint is disabled: Stripe sends it nothing", live["id"]))
    if current is not None:
        for other in endpoints:
            if other is not current and other.get("status") == "enabled":
                differences.append(
                    Difference(
                        "superseded_enabled",
                        f"an endpoint of version {other.get('api_version')} at the same URL still delivers",
                        other["id"],
                    )
                )
    return differences


async def check(
    client: stripe.StripeClient, spec: EndpointSpec, *, backoff: Backoff = DEFAULT_BACKOFF
) -> EndpointReport:
    endpoints = await endpoints_at(client, spec.url, backoff=backoff)
    current = _current(spec, endpoints)
    report = EndpointReport(spec.url, spec.api_version, current["id"] if current else None)
    report.differences = compare(spec, endpoints)
    return report


# ------------------------------------------------------------------ changing


def rotation_steps(spec: EndpointSpec, endpoint_id: str, *, replacing: bool) -> list[str]:
    steps = [
        "Add the secret above to STRIPE_WEBHOOK_SECRET after the current one(s), comma-separated "
        "(STRIPE_WEBHOOK_SECRET=whsec_CURRENT,whsec_NEW), in the Kubernetes Secret, then "
        "`kubectl -n payments rollout restart deploy/stripe-gateway`. It is shown once: Stripe never returns it again.",
    ]
    if replacing:
        steps.append(
            f"Run `gateway stripe endpoint ensure --url {spec.url}` again: it enables {endpoint_id} and disables the "
            "endpoint it replaces (events of both are deduplicated by the ledger)."
        )
    steps += [
        "Watch `sum by (secret_index) (rate(stripe_webhook_secret_matches_total[5m]))`: the new secret's index must "
        "match deliveries, and no `Stripe webhook signature verification failed` may appear in the logs.",
        "Then remove the old secret from STRIPE_WEBHOOK_SECRET (restart again)"
        + (", and delete the disabled endpoint in the Dashboard." if replacing else "."),
        f"`gateway stripe endpoint check --url {spec.url}` must exit 0.",
    ]
    return steps


async def _update(
    client: stripe.StripeClient, endpoint_id: str, params: dict[str, Any], backoff: Backoff
) -> dict[str, Any]:
    updated = await backoff.call(
        "webhook_endpoints.update",
        functools.partial(client.v1.webhook_endpoints.update_async, endpoint_id, params=params),  # type: ignore[arg-type]
    )
    return _raw(updated)


async def ensure(
    client: stripe.StripeClient, spec: EndpointSpec, *, backoff: Backoff = DEFAULT_BACKOFF
) -> EndpointReport:
    """Make the endpoints at the spec's URL match the code; say what changed."""
    endpoints = await endpoints_at(client, spec.url, backoff=backoff)
    report = EndpointReport(spec.url, spec.api_version)
    current = _current(spec, endpoints)
    if current is None:
        replacing = any(e.get("status") == "enabled" for e in endpoints)
        params: dict[str, Any] = {
            "url": spec.url,
            "enabled_events": list(spec.enabled_events),
            "api_version": spec.api_version,
            "description": DESCRIPTION,
            "metadata": METADATA,
        }
        created = _raw(
            await backoff.call(
                "webhook_endpoints.create",
                functools.partial(client.v1.webhook_endpoints.create_async, params=params),  # type: ignore[arg-type]
            )
        )
        report.endpoint = created["id"]
        report.secret = created.get("secret")
        report.changes.append(
            f"created {created['id']} (api_version {spec.api_version}, {len(spec.enabled_events)} event types)"
        )
        if replacing:
            # Its deliveries would fail the signature check until its secret is deployed: the old one delivers.
            await _update(client, created["id"], {"disabled": True}, backoff)
            old = ", ".join(e["id"] for e in endpoints if e.get("status") == "enabled")
            report.changes.append(f"{created['id']} is disabled until its secret is deployed; {old} still delivers")
        report.next_steps = rotation_steps(spec, created["id"], replacing=replacing)
        report.differences = compare(spec, await endpoints_at(client, spec.url, backoff=backoff))
        return report

    report.endpoint = current["id"]
    params = {}
    enabled = set(current.get("enabled_events") or [])
    if enabled != set(spec.enabled_events):
        params["enabled_events"] = list(spec.enabled_events)
        added, removed = sorted(set(spec.enabled_events) - enabled), sorted(enabled - set(spec.enabled_events))
        if added:
            report.changes.append(f"{current['id']}: subscribed to {', '.join(added)}")
        if removed:
            report.changes.append(f"{current['id']}: unsubscribed from {', '.join(removed)}")
    if current.get("status") != "enabled":
        params["disabled"] = False
        report.changes.append(f"{current['id']}: enabled")
    if params:
        await _update(client, current["id"], params, backoff)
    for other in endpoints:
        if other is not current and other.get("status") == "enabled":
            await _update(client, other["id"], {"disabled": True}, backoff)
            report.changes.append(
                f"{other['id']} (api_version {other.get('api_version')}): disabled, replaced by {current['id']}; "
                "delete it in the Dashboard once its secret is removed from STRIPE_WEBHOOK_SECRET"
            )
    report.differences = compare(spec, await endpoints_at(client, spec.url, backoff=backoff))
    return report
