"""Version drift: every webhook event is counted by its `api_version`, and whether it is STRIPE_API_VERSION.

Stripe renders an event in the API version of the endpoint that receives it (or the account's default when the
endpoint has none). Events in another version than the pinned one mean the endpoint in Stripe drifted from the
configuration: the alert StripeApiVersionDrift warns, /ready stays true (the payload adapter reads every version
of `gateway.stripe_payload.READ_API_VERSIONS`), and `gateway stripe endpoint check` says what differs.
"""

from __future__ import annotations

import re

from gateway import metrics

# A Stripe API version ("2025-03-31.basil", "2020-08-27"); anything else is counted as "unknown" so that a label
# never takes an unbounded value.
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]{1,20})?$")


def version_label(api_version: str | None) -> str:
    return api_version if api_version is not None and _API_VERSION.match(api_version) else "unknown"


def observe_event_version(api_version: str | None, pinned: str) -> None:
    """Count one verified event by its `api_version` (`pinned`: STRIPE_API_VERSION)."""
    label = version_label(api_version)
    metrics.STRIPE_EVENT_API_VERSIONS.labels(label, "true" if label == pinned else "false").inc()
