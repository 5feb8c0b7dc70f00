"""LISTEN on the bridge channel: background workers wake up as soon as a bridge event commits.

Writers announce new rows only once their transaction has committed (gateway/bridge/outbox.py: announce), so a
wake-up always finds them, and a rolled-back write is never announced. Notifications are only a hint: workers
also poll every interval, and a lost listener connection is reopened on the next wait.

A wake-up waits `COALESCE_SECONDS` more before it returns, so a burst of events makes one round of the
workers, not one round per event (each round briefly holds back bridge writers: gateway/bridge/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from gateway.bridge.outbox import BRIDGE_CHANNEL

log = logging.getLogger("gateway.bridge")

COALESCE_SECONDS = 0.05


class BridgeWakeup:
    def __init__(self, database_url: str, channel: str = BRIDGE_CHANNEL) -> None:
        self._url = database_url
        self._channel = channel
        self._con: asyncpg.Connection | None = None
        self._event = asyncio.Event()
        self.notifications: list[str] = []  # payloads heard ("<id>:<type>"), kept short for tests and debugging

    def _heard(self, _con: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications.append(payload)
        del self.notifications[:-1000]
        self._event.set()

    async def start(self) -> None:
        if self._con is not None and not self._con.is_closed():
            return
        try:
            self._con = await asyncpg.connect(self._url)
            await self._con.add_listener(self._channel, self._heard)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("bridge listener unavailable; polling only", extra={"code": type(exc).__name__})
            self._con = None

    async def wait(self, seconds: float) -> bool:
        """Wait for a notification or `seconds`; True when woken by a notification."""
        await self.start()
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            self._event.clear()
            return False
        await asyncio.sleep(COALESCE_SECONDS)
        self._event.clear()
        return True

    async def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(Exception):
                await self._con.close()
            self._con = None
