"""Issue 20, item 2: an SMTP server or event bridge database unreachable at boot is one warning line each (the
gateway starts: their work waits in the database), never a traceback."""

from __future__ import annotations

from typing import Any

from tests.cli_process import closed_port
from tests.platform_app import json_logs

SMTP_DOWN = "SMTP server unreachable at boot; order e-mails wait until it answers"
BRIDGE_DOWN = "event bridge database unreachable at boot; bridge events wait in the outbox until it answers"


async def test_unreachable_downstreams_are_one_warning_line_each(aiohttp_client: Any, app_factory: Any) -> None:
    app = app_factory(
        SMTP_URL=f"smtp://127.0.0.1:{closed_port()}",
        SMTP_SENDER="shop@example.com",
        EVENT_BRIDGE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/bridge",
    )
    with json_logs() as logs:
        client = await aiohttp_client(app)

    warnings = [e for e in logs.entries if e["message"] in (SMTP_DOWN, BRIDGE_DOWN)]
    assert sorted(e["message"] for e in warnings) == sorted([SMTP_DOWN, BRIDGE_DOWN])
    assert all(e["level"] == "warning" and "exception" not in e for e in warnings)
    assert (await client.get("/health")).status == 200


async def test_reachable_downstreams_say_nothing(aiohttp_client: Any, app_factory: Any, database_url: str) -> None:
    with json_logs() as logs:
        await aiohttp_client(app_factory(EVENT_BRIDGE_DATABASE_URL=database_url))
    assert BRIDGE_DOWN not in [e["message"] for e in logs.entries]
