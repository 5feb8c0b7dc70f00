"""Order confirmation e-mails (seed 002) against a real local SMTP server (aiosmtpd): sent once per order, not
resent after a restart, retried with backoff on failure, the address never logged."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from gateway import keys, metrics
from gateway.notifications.order_emails import KIND, EmailConfig, OrderEmailNotifier
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event, new_id, payment_intent
from tests.subscription_helpers import deliver

BUYER = "buyer.person@example.org"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.fail_next = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 Requested action aborted: try again later"
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, str]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, f"smtp://127.0.0.1:{port}"
    controller.stop()


def config(url: str, **overrides: Any) -> EmailConfig:
    base = EmailConfig.from_settings(make_settings(SMTP_URL=url, SMTP_SENDER="shop@example.com"))
    return EmailConfig(
        base.target,
        base.sender,
        base.subject,
        base.template,
        overrides.get("max_attempts", 3),
        backoff_base_seconds=0.0,
    )


async def paid_order(pool: asyncpg.Pool, email: str | None = BUYER) -> str:
    async with pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=3, unit_amount=2500)
        order_id = await create_order(con, [(product, 1)])
    session = checkout_session(order_id, amount_total=2500, user_id="user-1")
    session["customer_details"]["email"] = email
    assert (await deliver(pool, make_event("checkout.session.completed", session))).status == "processed"
    return order_id


def sample(outcome: str | None = None) -> float:
    metric = metrics.EMAILS_SENT.labels(KIND) if outcome is None else metrics.EMAILS_FAILED.labels(KIND, outcome)
    value: float = metric._value.get()
    return value


async def test_confirmation_sent_once_and_not_again_after_a_restart(
    db_pool: asyncpg.Pool, smtp: tuple[Mailbox, str], caplog: pytest.LogCaptureFixture
) -> None:
    mailbox, url = smtp
    order_id = await paid_order(db_pool)
    sent_before = sample()
    with caplog.at_level(logging.DEBUG):
        assert await OrderEmailNotifier(db_pool, config(url)).run_once() == 1
        assert await OrderEmailNotifier(db_pool, config(url)).run_once() == 0  # a restarted notifier
    assert len(mailbox.messages) == 1
    recipients, message = mailbox.messages[0]
    assert recipients == [BUYER]
    assert message["From"] == "shop@example.com" and message["Subject"] == "Your order is confirmed"
    body = message.get_payload()
    assert order_id in body and "25.00 EUR" in body
    assert sample() == sent_before + 1
    ours = [r for r in caplog.records if r.name.startswith("gateway")]  # (aiosmtpd's own server logs it)
    assert any(r.getMessage() == "order e-mail sent" for r in ours)
    assert all(BUYER not in r.getMessage() and all(BUYER not in str(v) for v in r.__dict__.values()) for r in ours)
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT status, attempts, sent_at FROM email_deliveries")
    assert row["status"] == "sent" and row["attempts"] == 1 and row["sent_at"] is not None


async def test_failures_are_retried_with_backoff_then_given_up(
    db_pool: asyncpg.Pool, smtp: tuple[Mailbox, str]
) -> None:
    mailbox, url = smtp
    await paid_order(db_pool)
    mailbox.fail_next = 1
    retries = sample("retry")
    notifier = OrderEmailNotifier(db_pool, config(url))
    await notifier.run_once()  # 451: retried later
    assert sample("retry") == retries + 1 and mailbox.messages == []
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT status, attempts, last_error FROM email_deliveries")
    assert (row["status"], row["attempts"]) == ("pending", 1) and row["last_error"] == "SMTPDataError"
    await notifier.run_once()
    assert len(mailbox.messages) == 1

    # a server that keeps refusing: given up after EMAIL_MAX_ATTEMPTS
    await paid_order(db_pool)
    mailbox.fail_next = 10
    gave_up = sample("gave_up")
    for _ in range(3):
        await notifier.run_once()
    assert sample("gave_up") == gave_up + 1
    async with db_pool.acquire() as con:
        assert (
            await con.fetchval("SELECT status FROM email_deliveries ORDER BY bridge_event_id DESC LIMIT 1") == "failed"
        )


async def test_an_order_paid_before_its_address_is_known_waits_for_it(
    db_pool: asyncpg.Pool, smtp: tuple[Mailbox, str], app_factory: Any, aiohttp_client: Any
) -> None:
    """The payment intent's event pays the order before the Checkout Session's brings the buyer's address: the
    e-mail waits (counted), then goes out once the address has arrived; never lost to event order."""
    mailbox, url = smtp
    async with db_pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=3, unit_amount=2500)
        order_id = await create_order(con, [(product, 1)])
    pi = new_id("pi")
    paid = make_event("payment_intent.succeeded", payment_intent(order_id, 2500, pi_id=pi))
    assert (await deliver(db_pool, paid)).status == "processed"
    notifier = OrderEmailNotifier(db_pool, config(url))
    assert await notifier.run_once() == 0
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM email_deliveries") == "waiting_address"
    refresher = (await aiohttp_client(app_factory(METRICS_REFRESH_INTERVAL_SECONDS="0.05"))).server.app[
        keys.GAUGE_REFRESHER
    ]
    await refresher.wait_rounds(2)
    assert metrics.EMAILS_WAITING_ADDRESS._value.get() == 1

    session = checkout_session(order_id, amount_total=2500, payment_intent=pi, user_id="user-1")
    session["customer_details"]["email"] = BUYER
    assert (await deliver(db_pool, make_event("checkout.session.completed", session))).status == "processed"
    async with db_pool.acquire() as con:  # next look, a minute later
        await con.execute("UPDATE email_deliveries SET next_attempt_at = now()")
    assert await notifier.run_once() == 1
    assert [recipients for recipients, _ in mailbox.messages] == [[BUYER]]
    await refresher.wait_rounds(2)
    assert metrics.EMAILS_WAITING_ADDRESS._value.get() == 0


async def test_unreachable_server_and_missing_address(db_pool: asyncpg.Pool) -> None:
    await paid_order(db_pool, email=None)
    notifier = OrderEmailNotifier(db_pool, config(f"smtp://127.0.0.1:{_free_port()}"))
    await notifier.run_once()
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM email_deliveries") == "waiting_address"
        # no event brought an address within EMAIL_MAX_AGE: given up
        await con.execute("UPDATE email_deliveries SET created_at = now() - interval '2 days', next_attempt_at = now()")
    no_recipient = sample("no_recipient")
    await notifier.run_once()
    assert sample("no_recipient") == no_recipient + 1
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM email_deliveries") == "skipped"
    await paid_order(db_pool)
    retries = sample("retry")
    await notifier.run_once()  # connection refused
    assert sample("retry") == retries + 1


async def test_the_app_sends_in_the_background(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, smtp: tuple[Mailbox, str]
) -> None:
    mailbox, url = smtp
    await aiohttp_client(app_factory(SMTP_URL=url, SMTP_SENDER="shop@example.com", EMAIL_POLL_INTERVAL_SECONDS="0.2"))
    await paid_order(db_pool)
    for _ in range(100):  # woken by NOTIFY; the deadline only bounds a failure
        if mailbox.messages:
            break
        await asyncio.sleep(0.1)
    assert [m[0] for m in mailbox.messages] == [[BUYER]]


def test_smtp_settings_are_checked() -> None:
    from gateway.settings import ConfigError

    with pytest.raises(ConfigError, match="SMTP_SENDER"):
        EmailConfig.from_settings(make_settings(SMTP_URL="smtp://localhost:25"))
    with pytest.raises(ConfigError, match="SMTP_URL"):
        EmailConfig.from_settings(make_settings(SMTP_URL="http://localhost", SMTP_SENDER="a@b.c"))
