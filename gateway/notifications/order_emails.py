"""Order confirmation e-mails (seed 002: "envoi de l'email de confirmation" on payment).

A notifier reads ORDER_PAID events from the bridge outbox and sends one confirmation per order through SMTP:

- enqueue: each new ORDER_PAID event gets an `email_deliveries` row (unique per order), at most EMAIL_MAX_AGE
  old (a confirmation days late is useless; deploying the notifier does not mail old orders);
- deliver: a due row is locked (SKIP LOCKED: replicas share the work), the message sent, the row marked `sent`
  in the same transaction. A crash after the SMTP server accepted but before the commit sends it again on
  restart (at least once; the Message-ID is stable so mail clients can fold duplicates); a `sent` row is never
  sent again;
- failures are retried with exponential backoff, counted (`emails_failed_total{outcome="retry"}`), and given
  up after EMAIL_MAX_ATTEMPTS (`outcome="gave_up"`).
- an order paid before its buyer's address is known (the payment intent's event before the Checkout Session's)
  waits (`waiting_address`, counted in `emails_waiting_address`) and is looked at again every
  ADDRESS_RECHECK; it is sent as soon as an event brings the address, and `skipped` only when none did within
  EMAIL_MAX_AGE (`outcome="no_recipient"`).

The recipient is the checkout's `customer_details.email` / `customer_email` or the payment intent's
`receipt_email`, read from the ledger's stored payloads. It is never logged.

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from aiohttp import web

from gateway import keys, metrics
from gateway.bridge import events
from gateway.bridge.notify import BridgeWakeup
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.settings import ConfigError, Settings

log = logging.getLogger("gateway.notifications")

KIND = "order_confirmation"
EMAIL_MAX_AGE = timedelta(days=1)
ADDRESS_RECHECK = timedelta(minutes=1)
SMTP_TIMEOUT_SECONDS = 20.0
DEFAULT_TEMPLATE = """Hello,

Thank you for your order $order_id. Your payment of $amount $currency has been received.

We will let you know when your order ships.
"""

ENQUEUE = """
INSERT INTO email_deliveries (bridge_event_id, kind, order_id)
SELECT id, $1, (payload->>'order_id')::uuid FROM bridge_events
WHERE event_type = 'ORDER_PAID'
  AND id > (SELECT coalesce(max(bridge_event_id), 0) FROM email_deliveries)
  AND created_at > now() - $2::interval
ORDER BY id
LIMIT $3
ON CONFLICT DO NOTHING
"""
CLAIM = """
SELECT d.bridge_event_id, d.attempts, d.order_id::text AS order_id, b.payload,
       d.created_at < now() - $1::interval AS too_old
FROM email_deliveries d JOIN bridge_events b ON b.id = d.bridge_event_id
WHERE d.status IN ('pending', 'waiting_address') AND d.next_attempt_at <= now()
ORDER BY d.bridge_event_id
LIMIT 1
FOR UPDATE OF d SKIP LOCKED
"""
RECIPIENT_PAYLOADS = """
SELECT payload FROM webhook_events
WHERE (checkout_session_id = $1 OR payment_intent_id = $2 OR order_id = $3::uuid)
ORDER BY stripe_created DESC, id DESC
LIMIT 20
"""
MARK_SENT = """
UPDATE email_deliveries SET status = 'sent', attempts = attempts + 1, sent_at = now(), last_error = NULL,
    updated_at = now()
WHERE bridge_event_id = $1
"""
MARK_WAITING = """
UPDATE email_deliveries SET status = 'waiting_address', next_attempt_at = now() + $2::interval, updated_at = now()
WHERE bridge_event_id = $1
"""
MARK_SKIPPED = """
UPDATE email_deliveries SET status = 'skipped', last_error = $2, updated_at = now() WHERE bridge_event_id = $1
"""
MARK_FAILED = """
UPDATE email_deliveries SET status = $2, attempts = attempts + 1, last_error = $3,
    next_attempt_at = now() + $4::interval, updated_at = now()
WHERE bridge_event_id = $1
"""


# ------------------------------------------------------------------ SMTP


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        query = parse_qs(parts.query)
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            starttls=query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def send_sync(target: SmtpTarget, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if target.implicit_tls:
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_SECONDS)
    with client:
        if target.starttls:
            client.starttls(context=context)
        if target.username:
            client.login(target.username, target.password or "")
        client.send_message(message)


# ------------------------------------------------------------------ content


def recipient_from(payloads: list[Mapping[str, Any]]) -> str | None:
    """The buyer's address from stored Stripe events (checkout session or payment intent)."""
    for payload in payloads:
        obj = (payload.get("data") or {}).get("object") or {}
        details = obj.get("customer_details") or {}
        for value in (details.get("email"), obj.get("customer_email"), obj.get("receipt_email")):
            if isinstance(value, str) and "@" in value:
                return value
    return None


def format_amount(amount: int, currency: str | None) -> str:
    zero_decimal = {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
    if currency and currency.lower() in zero_decimal:
        return str(amount)
    return f"{amount / 100:.2f}"


@dataclass(frozen=True, slots=True)
class EmailConfig:
    target: SmtpTarget
    sender: str
    subject: str
    template: Template
    max_attempts: int
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailConfig:
        problems = []
        target: SmtpTarget | None = None
        try:
            target = SmtpTarget.parse(settings.smtp_url or "")
        except ValueError as exc:
            problems.append(f"SMTP_URL: {exc}")
        if not settings.smtp_sender or "@" not in settings.smtp_sender:
            problems.append("SMTP_SENDER: required with SMTP_URL (an e-mail address)")
        text = DEFAULT_TEMPLATE
        if settings.order_email_template:
            try:
                text = Path(settings.order_email_template).read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"ORDER_EMAIL_TEMPLATE: cannot be read ({type(exc).__name__})")
        if settings.email_max_attempts < 1:
            problems.append("EMAIL_MAX_ATTEMPTS: must be at least 1")
        if problems or target is None:
            raise ConfigError(problems)
        return cls(
            target,
            settings.smtp_sender or "",
            settings.order_email_subject,
            Template(text),
            settings.email_max_attempts,
        )

    def build(self, delivery_id: int, recipient: str, payload: Mapping[str, Any]) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = self.subject
        domain = self.sender.rpartition("@")[2] or "gateway"
        message["Message-ID"] = f"<order-paid-{delivery_id}@{domain}>"  # stable: re-sends fold
        currency = payload.get("currency")
        message.set_content(
            self.template.safe_substitute(
                order_id=payload.get("order_id", ""),
                amount=format_amount(int(payload.get("amount") or 0), currency),
                currency=(currency or "").upper(),
            )
        )
        return message


# ------------------------------------------------------------------ the notifier


class OrderEmailNotifier:
    def __init__(self, pool: asyncpg.Pool, config: EmailConfig, *, batch_size: int = 50) -> None:
        self.pool = pool
        self.config = config
        self.batch_size = batch_size

    async def enqueue(self) -> int:
        async with self.pool.acquire() as con, con.transaction():
            await events.wait_for_writers(con)  # ENQUEUE follows bridge ids: none may commit late below them
            status: str = await con.execute(ENQUEUE, KIND, EMAIL_MAX_AGE, self.batch_size)
        return int(status.split()[-1])

    def _backoff(self, attempts: int) -> timedelta:
        seconds = min(self.config.backoff_base_seconds * 2 ** max(0, attempts - 1), self.config.backoff_max_seconds)
        return timedelta(seconds=seconds)

    async def deliver_one(self) -> str:
        """Send the next due e-mail: "sent", "waiting" (no address yet), "skipped", "failed" or "none"."""
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(CLAIM, EMAIL_MAX_AGE)
            if row is None:
                return "none"
            delivery_id, order_id, payload = row["bridge_event_id"], row["order_id"], row["payload"]
            payloads = await con.fetch(
                RECIPIENT_PAYLOADS, payload.get("session_id"), payload.get("payment_intent_id"), order_id
            )
            recipient = recipient_from([p["payload"] for p in payloads])
            if recipient is None and not row["too_old"]:
                # Paid before the address is known (event order): wait for the event that brings it.
                await con.execute(MARK_WAITING, delivery_id, ADDRESS_RECHECK)
                return "waiting"
            if recipient is None:
                await con.execute(MARK_SKIPPED, delivery_id, "no recipient address known")
                metrics.EMAILS_FAILED.labels(KIND, "no_recipient").inc()
                log.warning("order e-mail skipped: no address", extra={"orderId": order_id, "reason": "no_recipient"})
                return "skipped"
            message = self.config.build(delivery_id, recipient, payload)
            try:
                await asyncio.to_thread(send_sync, self.config.target, message)
            except (OSError, smtplib.SMTPException) as exc:
                attempts = row["attempts"] + 1
                gave_up = attempts >= self.config.max_attempts
                await con.execute(
                    MARK_FAILED,
                    delivery_id,
                    "failed" if gave_up else "pending",
                    f"{type(exc).__name__}"[:200],
                    self._backoff(attempts),
                )
                metrics.EMAILS_FAILED.labels(KIND, "gave_up" if gave_up else "retry").inc()
                log.warning(
                    "order e-mail failed",
                    extra={
                        "orderId": order_id,
                        "code": type(exc).__name__,
                        "status": "failed" if gave_up else "retry",
                    },
                )
                return "failed"
            await con.execute(MARK_SENT, delivery_id)
        metrics.EMAILS_SENT.labels(KIND).inc()
        log.info("order e-mail sent", extra={"orderId": order_id})
        return "sent"

    async def run_once(self) -> int:
        await self.enqueue()
        sent = 0
        for _ in range(self.batch_size):
            outcome = await self.deliver_one()
            if outcome in ("none", "failed"):  # nothing due, or the server is in trouble: back off
                break
            sent += outcome == "sent"
        return sent

    async def run_forever(self, wakeup: BridgeWakeup, interval: float) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE_ERRORS as exc:
                log.warning("order e-mail round failed", extra={"code": type(exc).__name__})
            except Exception:
                log.exception("order e-mail round failed", extra={"code": "notifier_error"})
            await wakeup.wait(interval)


async def order_emails_ctx(app: web.Application) -> AsyncIterator[None]:
    """Runs the notifier when SMTP_URL is set (its settings are checked at boot)."""
    settings = app[keys.SETTINGS]
    if not settings.smtp_url:
        yield
        return
    notifier = OrderEmailNotifier(app[keys.DB_POOL], EmailConfig.from_settings(settings))
    wakeup = BridgeWakeup(app[keys.DATABASE_URL])
    task = asyncio.create_task(notifier.run_forever(wakeup, settings.email_poll_interval_seconds), name="order-emails")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wakeup.close()
