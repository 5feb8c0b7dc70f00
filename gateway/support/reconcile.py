"""`gateway events reconcile`: fetch events from Stripe's Events API and ingest the ones the ledger misses.

Stripe keeps events for 30 days, so the window is at most the last 30 days. Events are listed newest first
with `created[gte]` (and `created[lte]`, for the watchdog) and `starting_after` pagination, at most 20 types per
listing (Stripe's limit on `types`); a 429 waits as `Retry-After` says (gateway.stripe_client.Backoff). The ids of
each page are checked against the ledger, and every missing event goes through `ingest_fetched_event`, exactly as
a webhook delivery would (same envelope check, same transaction, same kill switch), oldest first.

The missed-webhook watchdog (gateway/stripe_account/watchdog.py) runs `reconcile` on a short window, and
`gateway stripe resync` feeds its synthetic events through `ingest_fetched_event`: one path into the ledger for
everything that did not arrive as a delivery.
"""

from __future__ import annotations

import functools
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
from gateway.progress import SILENT, Progress
from gateway.stripe_client import DEFAULT_BACKOFF, Backoff
from gateway.webhooks.envelope import parse_event
from gateway.webhooks.ledger import HandlerFailed, IngestResult, Origin, ingest

log = logging.getLogger("gateway.support")

MAX_WINDOW_SECONDS = 30 * 86400  # Stripe's Events API only returns events of the last 30 days
PAGE_SIZE = 100  # Stripe's largest page
MAX_TYPES_PER_LISTING = 20  # Stripe's limit on the `types` filter of GET /v1/events

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
    until: int | None = None  # Unix time of `created[lte]` (None: up to now)
    missing: int = 0  # events listed that the ledger lacked
    oldest_missing_created: int | None = None  # `created` of the oldest of them
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
            "until": self.until,
            "request_id": self.request_id,
            "seen": self.seen,
            "missing": self.missing,
            "oldest_missing_created": self.oldest_missing_created,
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
    backoff: Backoff = DEFAULT_BACKOFF,
    progress: Progress = SILENT,
) -> list[dict[str, Any]]:
    """Walk every page of the window; return the events not in the ledger (newest first within each listing)."""
    progress.phase("listing Stripe events")
    created: dict[str, int] = {"gte": report.since}
    if report.until is not None:
        created["lte"] = report.until
    type_groups = [list(types[i : i + MAX_TYPES_PER_LISTING]) for i in range(0, len(types), MAX_TYPES_PER_LISTING)]
    missing: list[dict[str, Any]] = []
    for group in type_groups or [[]]:
        params: dict[str, Any] = {"created": created, "limit": PAGE_SIZE}
        if group:
            params["types"] = group
        if not await _list_missing_pages(pool, client, report, params, missing, backoff, progress):
            break
    return missing


async def _list_missing_pages(
    pool: asyncpg.Pool,
    client: stripe.StripeClient,
    report: ReconcileReport,
    params: dict[str, Any],
    missing: list[dict[str, Any]],
    backoff: Backoff,
    progress: Progress,
) -> bool:
    """One listing, every page; False when Stripe answered an error (recorded in the report)."""
    starting_after: str | None = None
    while True:
        page_params = dict(params)
        if starting_after is not None:
            page_params["starting_after"] = starting_after
        try:
            page = await backoff.call(
                "events.list",
                functools.partial(client.v1.events.list_async, params=page_params),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            report.error = f"{type(exc).__name__}: {exc.user_message or exc}"
            log.error("Stripe events listing failed", extra={"code": exc.code, "status": exc.http_status})
            return False
        events = [e for e in _raw_events(page) if isinstance(e.get("id"), str)]
        if not events:
            return True
        report.seen += len(events)
        progress.advance(len(events))
        async with pool.acquire() as con:
            rows = await con.fetch(KNOWN_EVENT_IDS, [e["id"] for e in events])
        known = {r["stripe_event_id"] for r in rows}
        report.already_known += len(known)
        missing.extend(e for e in events if e["id"] not in known)
        if not page.has_more:
            return True
        starting_after = events[-1]["id"]


async def ingest_fetched_event(
    pool: asyncpg.Pool,
    raw: dict[str, Any],
    *,
    origin: Origin,
    request_id: str,
    handlers_enabled: bool,
    app_source: str,
    required_livemode: bool | None,
) -> IngestResult:
    """Ingest an event that did not come as a delivery (`origin`: reconcile, resync; the ledger row records it),
    exactly as the webhook view does after the signature check. Raises ApiError (not an event we accept) and
    HandlerFailed like `ingest`."""
    event = parse_event(orjson.dumps(raw), required_livemode=required_livemode)
    return await ingest(
        pool,
        event,
        request_id=request_id,
        handlers_enabled=handlers_enabled,
        app_source=app_source,
        origin=origin,
    )


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
    settle_seconds: int = 0,
    backoff: Backoff = DEFAULT_BACKOFF,
    progress: Progress = SILENT,
) -> ReconcileReport:
    """List Stripe's events of the last `window_seconds` (at most 30 days), except the last `settle_seconds`
    (events Stripe may still be delivering), and ingest the missing ones."""
    current = int(time.time() if now is None else now)
    since = current - min(window_seconds, MAX_WINDOW_SECONDS)
    report = ReconcileReport(
        since=since, request_id=request_id, until=current - settle_seconds if settle_seconds else None
    )
    missing = await list_missing_events(pool, client, report, types=types, backoff=backoff, progress=progress)
    # Oldest first, as they happened: reversed newest-first pages, then a stable sort on `created`.
    missing.reverse()
    missing.sort(key=lambda e: int(e.get("created") or 0))
    report.missing = len(missing)
    if missing:
        report.oldest_missing_created = int(missing[0].get("created") or 0)
    outcomes: dict[str, int] = {}
    progress.phase("ingesting missing events", len(missing))
    for raw in missing:
        progress.advance()
        event_id = raw["id"]
        try:
            result = await ingest_fetched_event(
                pool,
                raw,
                origin="reconcile",
                request_id=request_id,
                handlers_enabled=handlers_enabled,
                app_source=app_source,
                required_livemode=required_livemode,
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
