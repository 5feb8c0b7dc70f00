"""At boot, one look at the services the gateway sends to besides its database: the SMTP server of order e-mails
and the external event bridge database. Neither stops the gateway (their work waits in the database and is
retried), but an operator starting it learns at once, in one warning line each, that one does not answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from gateway import keys
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.notifications.order_emails import SmtpTarget

log = logging.getLogger("gateway.boot")

PROBE_TIMEOUT_SECONDS = 3.0


async def smtp_answers(url: str) -> str | None:
    """None when the SMTP server accepts a connection, else why not."""
    target = SmtpTarget.parse(url)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            _, writer = await asyncio.open_connection(target.host, target.port)
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__
    writer.close()
    return None


async def bridge_target_answers(url: str) -> str | None:
    """None when the event bridge database accepts a session, else why not."""
    try:
        con = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_SECONDS)
    except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
        return type(exc).__name__
    await con.close()
    return None


async def downstream_probe_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    probes = []
    if settings.smtp_url:
        probes.append(
            ("SMTP server unreachable at boot; order e-mails wait until it answers", smtp_answers(settings.smtp_url))
        )
    if settings.event_bridge_database_url:
        probes.append(
            (
                "event bridge database unreachable at boot; bridge events wait in the outbox until it answers",
                bridge_target_answers(settings.event_bridge_database_url),
            )
        )
    reasons = await asyncio.gather(*(probe for _, probe in probes))
    for (message, _), reason in zip(probes, reasons, strict=True):
        if reason is not None:
            log.warning(message, extra={"code": "downstream_unreachable", "reason": reason})
    yield
