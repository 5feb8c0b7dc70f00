"""The event envelope: a verified body must be a Stripe event object, else 400."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from gateway import stripe_payload as sp
from gateway.errors import BadRequest


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int
    api_version: str | None
    livemode: bool
    object: dict[str, Any]
    raw: dict[str, Any]

    @cached_property
    def ids(self) -> sp.RelatedIds:
        """The ids the event names (order, session, payment intent, charge, ...), read once."""
        return sp.related_ids(self.type, self.object)


def parse_event(body: bytes, *, required_livemode: bool | None) -> StripeEvent:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not JSON", code="invalid_event") from None
    if not isinstance(raw, dict):
        raise BadRequest("The event must be a JSON object", code="invalid_event")
    event_id, event_type, created = raw.get("id"), raw.get("type"), raw.get("created")
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    problems = []
    if not isinstance(event_id, str) or not event_id.startswith("evt_") or len(event_id) > 255:
        problems.append("id must be an evt_ identifier")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
        problems.append("type is required")
    if not isinstance(created, int) or isinstance(created, bool) or created <= 0:
        problems.append("created must be a Unix timestamp")
    if not isinstance(obj, dict):
        problems.append("data.object must be an object")
    if problems:
        raise BadRequest("Not a Stripe event: " + "; ".join(problems), code="invalid_event")
    livemode = bool(raw.get("livemode", False))
    if required_livemode is not None and livemode != required_livemode:
        mode = "live" if livemode else "test"
        raise BadRequest(f"A {mode}-mode event is refused by this deployment", code="livemode_mismatch")
    api_version = raw.get("api_version")
    return StripeEvent(
        id=event_id,  # type: ignore[arg-type]
        type=event_type,  # type: ignore[arg-type]
        created=created,  # type: ignore[arg-type]
        api_version=api_version if isinstance(api_version, str) else None,
        livemode=livemode,
        object=obj,  # type: ignore[arg-type]
        raw=raw,
    )


def event_from_payload(payload: dict[str, Any]) -> StripeEvent:
    """Rebuild a verified event from the payload stored in the ledger (it was checked at delivery)."""
    return parse_event(orjson.dumps(payload), required_livemode=None)
