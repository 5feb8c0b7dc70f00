"""The event envelope: a verified body must be a Stripe event object, else 400.

A verified body that PostgreSQL cannot store as sent (a NUL character, a lone surrogate, nesting deeper than any
Stripe event, an impossible `created`) is Stripe's word all the same: `parse_event` raises `UnstorableEvent` with
what can be read of its envelope, and the ledger records it `ignored` with its exact bytes
(gateway/webhooks/ledger.py: record_unstorable)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson

from gateway import stripe_payload as sp
from gateway.errors import BadRequest
from gateway.input_rules import Problem, json_bytes_problem, text_problem, value_problem

# Unix seconds PostgreSQL's timestamptz and Python's datetime both hold (up to 9999-12-31).
MAX_CREATED = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp())


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


@dataclass(frozen=True)
class Unstorable:
    """A verified event that cannot be stored as sent: its id (Stripe's when readable, else one derived from the
    bytes, so a redelivery is a duplicate), what can be read of its envelope, the reason and the exact bytes."""

    id: str
    type: str
    created: int | None
    api_version: str | None
    livemode: bool
    reason: Problem
    body: bytes


class UnstorableEvent(Exception):
    def __init__(self, unstorable: Unstorable) -> None:
        super().__init__(unstorable.reason)
        self.unstorable = unstorable


def _readable(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 255 and text_problem(value) is None else None


def _unstorable(body: bytes, raw: object, reason: Problem) -> UnstorableEvent:
    fields = raw if isinstance(raw, dict) else {}
    event_id = _readable(fields.get("id"))
    if event_id is None or not event_id.startswith("evt_"):
        event_id = "evt_unstorable_" + hashlib.sha256(body).hexdigest()[:32]
    created = fields.get("created")
    return UnstorableEvent(
        Unstorable(
            id=event_id,
            type=_readable(fields.get("type")) or "unknown",
            created=created if isinstance(created, int) and not isinstance(created, bool) else None,
            api_version=_readable(fields.get("api_version")),
            livemode=fields.get("livemode") is True,
            reason=reason,
            body=body,
        )
    )


def parse_event(body: bytes, *, required_livemode: bool | None) -> StripeEvent:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        problem = json_bytes_problem(body)  # JSON that orjson refuses but is Stripe's (a lone surrogate)
        if problem is None:
            raise BadRequest("The body is not JSON", code="invalid_event") from None
        try:
            lenient = json.loads(body.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            lenient = None
        raise _unstorable(body, lenient, problem) from None
    problem = value_problem(raw)
    if problem is not None:
        raise _unstorable(body, raw, problem)
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
    elif created > MAX_CREATED and not problems:
        raise _unstorable(body, raw, "timestamp_out_of_range")
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
