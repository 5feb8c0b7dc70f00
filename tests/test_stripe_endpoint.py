"""`gateway stripe endpoint ensure` / `check` against the local fake of Stripe's API: the endpoint's events are the
dispatch table's keys, its version STRIPE_API_VERSION; drift (events removed or added in the Dashboard, the
endpoint disabled, another version) is found by `check` (exit 1) and fixed by `ensure`."""

from __future__ import annotations

import pytest
import stripe
from prometheus_client import REGISTRY

from gateway.settings import Settings
from gateway.stripe_account import endpoint
from gateway.stripe_client import Backoff
from gateway.webhooks.handlers import HANDLERS
from tests.conftest import make_settings
from tests.fakes.stripe_api import FakeStripe, close_sdk_client
from tests.support_helpers import run_cli

URL = "https://pay.example.com/stripe/webhook"


@pytest.fixture
def settings(fake_stripe: FakeStripe) -> Settings:
    return make_settings(STRIPE_API_BASE=fake_stripe.base_url, STRIPE_WEBHOOK_URL=URL)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def handled() -> list[str]:
    return sorted(HANDLERS)


async def test_endpoint_created_then_drifted_then_fixed(settings: Settings, fake_stripe: FakeStripe) -> None:
    # Nothing in Stripe yet: check fails, ensure creates it with the secret shown once.
    missing = await run_cli(["stripe", "endpoint", "check"], settings)
    assert missing.code == 1
    assert [d["code"] for d in missing.json["differences"]] == ["missing_endpoint"]

    created = await run_cli(["stripe", "endpoint", "ensure", "--url", URL], settings)
    assert created.code == 0, created.stderr
    report = created.json
    (endpoint,) = fake_stripe.webhook_endpoints.values()
    assert report["endpoint"] == endpoint["id"] and report["status"] == "ok"
    assert endpoint["url"] == URL and endpoint["status"] == "enabled"
    assert endpoint["enabled_events"] == handled()
    assert endpoint["api_version"] == settings.stripe_api_version
    assert report["secret"].startswith("whsec_")
    assert any("STRIPE_WEBHOOK_SECRET=whsec_CURRENT,whsec_NEW" in step for step in report["next_steps"])
    (create,) = fake_stripe.requests_to("POST", "/v1/webhook_endpoints")
    assert create.params["api_version"] == settings.stripe_api_version

    ok = await run_cli(["stripe", "endpoint", "check"], settings)
    assert ok.code == 0, ok.stderr
    assert ok.json == {
        "url": URL,
        "api_version": settings.stripe_api_version,
        "endpoint": endpoint["id"],
        "status": "ok",
        "differences": [],
    }
    assert "secret" not in ok.stdout  # Stripe shows it at creation only

    # Someone edits it in the Dashboard: charge.refunded dropped, customer.created added, endpoint disabled.
    endpoint["enabled_events"] = [t for t in handled() if t != "charge.refunded"] + ["customer.created"]
    endpoint["status"] = "disabled"
    drifted = await run_cli(["stripe", "endpoint", "check"], settings)
    assert drifted.code == 1
    assert drifted.json["status"] == "drifted"
    assert {d["code"]: d.get("values") for d in drifted.json["differences"]} == {
        "missing_event_types": ["charge.refunded"],
        "extra_event_types": ["customer.created"],
        "disabled": None,
    }
    assert "missing_event_types: event types the handlers take but Stripe does not send charge.refunded" in (
        drifted.stderr
    )

    fixed = await run_cli(["stripe", "endpoint", "ensure"], settings)
    assert fixed.code == 0, fixed.stderr
    assert fixed.json["changes"] == [
        f"{endpoint['id']}: subscribed to charge.refunded",
        f"{endpoint['id']}: unsubscribed from customer.created",
        f"{endpoint['id']}: enabled",
    ]
    assert "secret" not in fixed.json
    assert endpoint["enabled_events"] == handled() and endpoint["status"] == "enabled"
    assert len(fake_stripe.webhook_endpoints) == 1
    assert (await run_cli(["stripe", "endpoint", "check"], settings)).code == 0

    # Twice is harmless: nothing to change.
    again = await run_cli(["stripe", "endpoint", "ensure"], settings)
    assert again.code == 0 and "changes" not in again.json
    assert "nothing to change" in again.stderr


async def test_version_drift_replaces_the_endpoint(settings: Settings, fake_stripe: FakeStripe) -> None:
    """Stripe cannot change an endpoint's version: ensure creates a replacement, disabled until its secret is
    deployed, then enables it and disables the old one."""
    old = fake_stripe.sdk_client()
    try:
        created = await old.v1.webhook_endpoints.create_async(
            params={"url": URL, "enabled_events": handled(), "api_version": "2020-08-27"}  # type: ignore[typeddict-item]
        )
    finally:
        await close_sdk_client(old)
    old_id = created.id

    drifted = await run_cli(["stripe", "endpoint", "check"], settings)
    assert drifted.code == 1
    (difference,) = drifted.json["differences"]
    assert difference["code"] == "api_version" and difference["values"] == ["2020-08-27"]
    assert difference["endpoint"] == old_id

    replaced = await run_cli(["stripe", "endpoint", "ensure"], settings)
    assert replaced.code == 0, replaced.stderr
    new_id = replaced.json["endpoint"]
    assert new_id != old_id and replaced.json["secret"].startswith("whsec_")
    new = fake_stripe.webhook_endpoints[new_id]
    assert new["api_version"] == settings.stripe_api_version and new["status"] == "disabled"
    assert fake_stripe.webhook_endpoints[old_id]["status"] == "enabled"  # still delivers meanwhile
    assert any("ensure --url" in step for step in replaced.json["next_steps"])
    # No update ever tried to change an endpoint's version (Stripe refuses it).
    assert all("api_version" not in r.params for r in fake_stripe.requests_to("POST", "/v1/webhook_endpoints/*"))

    switched = await run_cli(["stripe", "endpoint", "ensure"], settings)
    assert switched.code == 0, switched.stderr
    assert switched.json["status"] == "ok" and "secret" not in switched.json
    assert fake_stripe.webhook_endpoints[new_id]["status"] == "enabled"
    assert fake_stripe.webhook_endpoints[old_id]["status"] == "disabled"
    assert (await run_cli(["stripe", "endpoint", "check"], settings)).code == 0


async def test_endpoint_commands_refuse_a_version_the_adapter_does_not_read(fake_stripe: FakeStripe) -> None:
    settings = make_settings(STRIPE_API_BASE=fake_stripe.base_url, STRIPE_API_VERSION="2026-10-28.endive")
    result = await run_cli(["stripe", "endpoint", "ensure", "--url", URL], settings)
    assert result.code == 2
    assert "not one the payload adapter reads" in result.stderr
    assert fake_stripe.requests == []


async def test_endpoint_commands_need_a_url(fake_stripe: FakeStripe) -> None:
    settings = make_settings(STRIPE_API_BASE=fake_stripe.base_url)
    result = await run_cli(["stripe", "endpoint", "check"], settings)
    assert result.code == 2 and "STRIPE_WEBHOOK_URL" in result.stderr


async def test_ensure_waits_on_429_as_retry_after_says(settings: Settings, fake_stripe: FakeStripe) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    before = sample("stripe_requests_rate_limited_total", {"operation": "webhook_endpoints.list"})
    fake_stripe.fail_next(2, status=429, method="GET", path="/v1/webhook_endpoints", retry_after=7)
    fake_stripe.fail_next(1, status=429, method="POST", path="/v1/webhook_endpoints")  # no Retry-After: 1 s
    client = fake_stripe.sdk_client()
    try:
        report = await endpoint.ensure(
            client, endpoint.EndpointSpec.for_url(URL, settings.stripe_api_version), backoff=Backoff(sleep=record)
        )
    finally:
        await close_sdk_client(client)

    assert waits == [7.0, 7.0, 1.0]
    assert report.secret is not None and len(fake_stripe.webhook_endpoints) == 1
    assert sample("stripe_requests_rate_limited_total", {"operation": "webhook_endpoints.list"}) == before + 2


async def test_429_without_end_gives_up(settings: Settings, fake_stripe: FakeStripe) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    fake_stripe.fail_next(10, status=429, method="GET", path="/v1/webhook_endpoints", retry_after=1)
    client = fake_stripe.sdk_client()
    try:
        with pytest.raises(stripe.RateLimitError):
            await endpoint.check(
                client,
                endpoint.EndpointSpec.for_url(URL, settings.stripe_api_version),
                backoff=Backoff(attempts=3, sleep=no_wait),
            )
    finally:
        await close_sdk_client(client)
    assert len(fake_stripe.requests_to("GET", "/v1/webhook_endpoints")) == 3
