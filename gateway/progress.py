"""Progress of long CLI work (reconcile, replay, products import, reservations sweep): on a terminal, one line
redrawn in place with the count, the rate and the time left, then a one-line summary; elsewhere nothing, so that
the command's stdout (its JSON result) and stderr (JSON log lines) stay machine-readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_SECONDS = 0.1  # at most ten redraws a second: a fast loop is not slowed down by its terminal


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """`phase(label, total)`, then `advance(n)` as work is done, then `finish(summary)`. Draws only when `stream`
    is a terminal; `Progress.for_terminal()` is the one of `sys.stderr`."""

    def __init__(self, stream: TextIO | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream if stream is not None and stream.isatty() else None
        self._clock = clock
        self._started = self._phase_started = clock()
        self._drawn_at = 0.0
        self.label = ""
        self.total: int | None = None
        self.done = 0

    @classmethod
    def for_terminal(cls) -> Progress:
        return cls(sys.stderr)

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def phase(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._phase_started = self._clock()
        self._draw(force=True)

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._draw(force=self.total is not None and self.done >= self.total)

    def line(self) -> str:
        elapsed = self._clock() - self._phase_started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            return f"{self.label}: {self.done}  {rate:.1f}/s"
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = _duration(left) if left is not None else "?"
        return f"{self.label}: {self.done}/{self.total}  {rate:.1f}/s  {eta} left"

    def finish(self, summary: str) -> None:
        """Replace the progress line with `summary` and the total time."""
        if self._stream is None:
            return
        self._stream.write(f"\r\033[K{summary} ({_duration(self._clock() - self._started)})\n")
        self._stream.flush()

    def _draw(self, *, force: bool) -> None:
        if self._stream is None:
            return
        now = self._clock()
        if not force and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        self._stream.write("\r\033[K" + self.line())
        self._stream.flush()


SILENT = Progress(None)
