"""`gateway events reconcile`: fetch events from Stripe's Events API and ingest the ones the ledger misses.

Stripe keeps events for 30 days, so the window is at most the last 30 days. Events are listed newest first
with `created[gte]` and `starting_after` pagination; the ids of each page are checked against the ledger, and
every missing event goes through `gateway.webhooks.ledger.ingest`, exactly as a webhook delivery would (same
envelope check, same transaction, same kill switch), oldest first.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import stripe

from gateway.errors import ApiError
from gateway.webhooks.envelope import parse_event
from gateway.webhooks.ledger import HandlerFailed, ingest

log = logging.getLogger("gateway.support")

MAX_WINDOW_SECONDS = 30 * 86400  # Stripe's Events API only returns events of the last 30 days
PAGE_SIZE = 100  # Stripe's largest page

KNOWN_EVENT_IDS = """
SELECT stripe_event_id FROM webhook_events WHERE stripe_event_id = ANY($1::text[])
"""

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s` or `3600` -> seconds (> 0)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(slots=True)
class ReconcileReport:
    since: int  # Unix time of `created[gte]`
    request_id: str
    seen: int = 0
    already_known: int = 0
    ingested: int = 0
    failed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed_events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # listing stopped early (Stripe API error)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "request_id": self.request_id,
            "seen": self.seen,
            "already_known": self.already_known,
            "ingested": self.ingested,
            "failed": self.failed,
            "outcomes": self.outcomes,
            "failed_events": self.failed_events,
            "error": self.error,
        }


def _raw_events(page: Any) -> list[dict[str, Any]]:
    """The events of a page as Stripe sent them (the raw JSON, not the SDK's objects)."""
    response = getattr(page, "last_response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return [dict(e) for e in data["data"] if isinstance(e, dict)]
    return [e.to_dict() for e in page.data]


async def list_missing_events(
    pool: asyncpg.Pool,
    client: stripe.StripeClient,
    report: ReconcileReport,
    *,
    types: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Walk every page of the window; return the events not in the ledger (Stripe's newest-first order)."""
    params: dict[str, Any] = {"created": {"gte": report.since}, "limit": PAGE_SIZE}
    if types:
        params["types"] = list(types)
    missing: list[dict[str, Any]] = []
    starting_after: str | None = None
    while True:
        page_params = dict(params)
        if starting_after is not None:
            page_params["starting_after"] = starting_after
        try:
            page = await client.v1.events.list_async(params=page_params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            report.error = f"{type(exc).__name__}: {exc.user_message or exc}"
            log.error("Stripe events listing failed", extra={"code": exc.code, "status": exc.http_status})
            break
        events = [e for e in _raw_events(page) if isinstance(e.get("id"), str)]
        if not events:
            break
        report.seen += len(events)
        async with pool.acquire() as con:
            rows = await con.fetch(KNOWN_EVENT_IDS, [e["id"] for e in events])
        known = {r["stripe_event_id"] for r in rows}
        report.already_known += len(known)
        missing.extend(e for e in events if e["id"] not in known)
        if not page.has_more:
            break
        starting_after = events[-1]["id"]
    return missing


async def reconcile(
    pool: asyncpg.Pool,
    client: stripe.StripeClient,
    *,
    window_seconds: int,
    request_id: str,
    handlers_enabled: bool,
    app_source: str,
    required_livemode: bool | None,
    types: Sequence[str] = (),
    now: float | None = None,
) -> ReconcileReport:
    """List Stripe's events of the last `window_seconds` (at most 30 days) and ingest the missing ones."""
    current = int(time.time() if now is None else now)
    since = current - min(window_seconds, MAX_WINDOW_SECONDS)
    report = ReconcileReport(since=since, request_id=request_id)
    missing = await list_missing_events(pool, client, report, types=types)
    # Oldest first, as they happened: reversed newest-first pages, then a stable sort on `created`.
    missing.reverse()
    missing.sort(key=lambda e: int(e.get("created") or 0))
    outcomes: dict[str, int] = {}
    for raw in missing:
        event_id = raw["id"]
        try:
            event = parse_event(orjson.dumps(raw), required_livemode=required_livemode)
            result = await ingest(
                pool,
                event,
                request_id=request_id,
                handlers_enabled=handlers_enabled,
                app_source=app_source,
                origin="reconcile",
            )
        except ApiError as exc:  # not an event we accept (livemode mismatch, malformed)
            report.failed += 1
            report.failed_events.append({"event_id": event_id, "error": exc.message})
            continue
        except HandlerFailed as exc:
            report.failed += 1
            report.failed_events.append({"event_id": event_id, "error": f"handler failed: {exc}"})
            continue
        if result.status == "duplicate":  # delivered by Stripe meanwhile
            report.already_known += 1
            continue
        report.ingested += 1
        outcomes[result.status] = outcomes.get(result.status, 0) + 1
    report.outcomes = outcomes
    log.info(
        "reconcile finished",
        extra={
            "status": "error" if report.error else "ok",
            "seen": report.seen,
            "alreadyKnown": report.already_known,
            "ingested": report.ingested,
            "failed": report.failed,
        },
    )
    return report
