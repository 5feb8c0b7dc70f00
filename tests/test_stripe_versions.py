"""Version drift: events are counted by `api_version` and whether it is STRIPE_API_VERSION; drift is a warning
(the alert StripeApiVersionDrift), never an outage: /ready stays 200."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from gateway.stripe_account.versions import observe_event_version, version_label


def count(api_version: str, pinned: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "stripe_webhook_event_api_versions_total", {"api_version": api_version, "pinned": pinned}
        )
        or 0.0
    )


async def test_drifted_events_are_counted_and_ready_stays_true(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory(STRIPE_API_VERSION="2025-03-31.basil"))
    pinned_before = count("2025-03-31.basil", "true")
    drifted_before = count("2020-08-27", "false")

    observe_event_version("2025-03-31.basil", "2025-03-31.basil")
    observe_event_version("2020-08-27", "2025-03-31.basil")
    observe_event_version("2020-08-27", "2025-03-31.basil")

    assert count("2025-03-31.basil", "true") == pinned_before + 1
    assert count("2020-08-27", "false") == drifted_before + 2
    ready = await client.get("/ready")
    assert ready.status == 200


def test_the_label_never_takes_an_unbounded_value() -> None:
    assert version_label("2025-03-31.basil") == "2025-03-31.basil"
    assert version_label("2019-12-03") == "2019-12-03"
    assert version_label(None) == "unknown"
    assert version_label("x" * 300) == "unknown"
    assert version_label("2025-03-31.basil; DROP") == "unknown"
    before = count("unknown", "false")
    observe_event_version(None, "2025-03-31.basil")
    assert count("unknown", "false") == before + 1
