"""Process lifecycle: the draining flag read by /ready, and supervised periodic background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("gateway.lifecycle")


@dataclass
class Lifecycle:
    expected_migration: int
    draining: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_draining(self) -> None:
        self.draining = True

    def every(self, name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` every `interval` seconds until shutdown; a failing run is logged and the loop goes on."""
        if interval <= 0:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task failed", extra={"task": name})

        self.tasks.append(asyncio.create_task(loop(), name=name))

    async def stop_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
