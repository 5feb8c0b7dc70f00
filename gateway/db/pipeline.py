"""Group commit: concurrent callers' statements share one round trip and one commit.

A caller sends `await pipeline.fetchrow(query, *args)` as it would to a connection. Calls that arrive while
earlier ones are on their way wait in a queue; a runner then sends waiting calls of one query as one batch:
asyncpg's `fetchmany`, which pipelines the executions behind a single Sync, so PostgreSQL runs them in one
implicit transaction, in order, and commits (one WAL flush) once for all of them. No timer: a call that finds a
runner free is sent at once, so an idle gateway answers as fast as with a plain connection, and the busier it
is, the more calls share a round trip.

Each call's own statement is unchanged: it commits together with its batch or not at all, and its caller learns
its row only after that commit. When a batch fails (a constraint, a deadlock with another process), nothing of it
was written; each of its calls is then sent again on its own, in its own transaction, so a failing call never
takes the others' work down with it. A database that is unreachable fails every call of the batch (503).

A batch takes a quarter of its query's calls in the pipeline (waiting, or on their way in the other batch), and
at least 4 (fewer pay a whole commit for too little work). Taking every waiting call made convoys: a big batch's
callers got their rows together and sent their next statements together, while the connections had little to do
(`make bench-webhook` at 16 connections left a quarter of the CPU idle; a quarter per batch: 4 to 6% more events/s,
the same at 64).

Members of a batch are sent in the order of their `order` key, and every runner sorts the same way, so two
batches in flight take the rows they lock in one order. Only statements that return exactly one row belong here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway import metrics
from gateway.db.errors import UNAVAILABLE_ERRORS

log = logging.getLogger("gateway.db")


@dataclass(slots=True)
class _Call:
    args: Sequence[Any]
    order: tuple[str, ...]
    future: asyncio.Future[asyncpg.Record]


class Pipeline:
    """Statements of concurrent callers, sent in batches of at most `max_batch_size` calls, and at most a
    `batch_share`-th of the query's calls in the pipeline (but at least `min_batch_size`; 1: every waiting call).
    Each query has at most `max_batches` batches on their way, each on its own pool connection."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batches: int = 2,
        max_batch_size: int = 64,
        batch_share: int = 4,
        min_batch_size: int = 4,
    ) -> None:
        self.pool = pool
        self._max_batches = max_batches
        self._max_batch_size = max_batch_size
        self._batch_share = batch_share
        self._min_batch_size = min_batch_size
        self._waiting: dict[str, list[_Call]] = {}
        self._sending: dict[str, int] = {}  # calls of each query in batches on their way
        self._runners: dict[str, set[asyncio.Task[None]]] = {}

    async def fetchrow(self, query: str, *args: Any, order: tuple[str, ...] = ()) -> asyncpg.Record:
        """The one row `query` returns, once its batch has committed."""
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(query, []).append(_Call(args, order, future))
        self._start_runner(query)
        return await future

    async def close(self) -> None:
        """Wait for the batches on their way."""
        while tasks := [task for runners in self._runners.values() for task in runners]:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_runner(self, query: str) -> None:
        runners = self._runners.setdefault(query, set())
        if self._waiting.get(query) and len(runners) < self._max_batches:
            task = asyncio.get_running_loop().create_task(self._run(query))
            runners.add(task)
            task.add_done_callback(lambda done: self._runner_done(query, done))

    def _runner_done(self, query: str, task: asyncio.Task[None]) -> None:
        """A runner cancelled before it ran never reached its own clean-up: its query's callers end here."""
        self._runners[query].discard(task)
        if task.cancelled():
            for call in self._waiting.pop(query, []):
                call.future.cancel()

    def _take(self, query: str) -> list[_Call] | None:
        """The next batch of `query`: calls whose callers still wait, in lock order."""
        while calls := self._waiting.get(query):
            share = -(-(len(calls) + self._sending.get(query, 0)) // self._batch_share)  # rounded up
            size = min(self._max_batch_size, max(self._min_batch_size, share))
            batch = [call for call in calls[:size] if not call.future.done()]  # cancelled: not sent
            if rest := calls[size:]:
                self._waiting[query] = rest
            else:
                del self._waiting[query]
            if batch:
                batch.sort(key=lambda call: call.order)
                return batch
        return None

    async def _run(self, query: str) -> None:
        task = asyncio.current_task()
        con: asyncpg.pool.PoolConnectionProxy | None = None
        try:
            con = await self.pool.acquire()
            while (batch := self._take(query)) is not None:
                self._sending[query] = self._sending.get(query, 0) + len(batch)
                try:
                    await self._send(con, query, batch)
                finally:
                    self._sending[query] -= len(batch)
        except BaseException as exc:
            # No connection, or it broke (or the runner was cancelled): every waiting call of this query ends too.
            for call in self._waiting.pop(query, []):
                if isinstance(exc, asyncio.CancelledError):
                    call.future.cancel()
                else:
                    _fail(call, exc)
            if not isinstance(exc, UNAVAILABLE_ERRORS):
                raise
        finally:
            # Counted out before the connection goes back: a call arriving meanwhile starts its own runner.
            self._runners[query].discard(task)
            if con is not None:
                await self.pool.release(con)
            self._start_runner(query)

    async def _send(self, con: asyncpg.pool.PoolConnectionProxy, query: str, calls: list[_Call]) -> None:
        """Send `calls` as one transaction; settle each call's future. Raises only when the connection is
        unusable (every call of `calls` failed with it)."""
        metrics.DB_BATCH_STATEMENTS.observe(len(calls))
        try:
            rows = await con.fetchmany(query, [call.args for call in calls])
            if len(rows) != len(calls):
                raise RuntimeError(f"a pipelined statement returned {len(rows)} rows for {len(calls)} calls")
        except UNAVAILABLE_ERRORS as exc:
            for call in calls:
                _fail(call, exc)
            raise
        except asyncio.CancelledError:
            for call in calls:
                call.future.cancel()
            raise
        except Exception as exc:
            if len(calls) == 1:
                _fail(calls[0], exc)
                return
            log.info("batch rolled back; its statements run one by one", extra={"reason": type(exc).__name__})
            for index, call in enumerate(calls):
                try:
                    await self._send(con, query, [call])
                except UNAVAILABLE_ERRORS as outage:
                    for rest in calls[index + 1 :]:
                        _fail(rest, outage)
                    raise
            return
        for call, row in zip(calls, rows, strict=True):
            if not call.future.done():
                call.future.set_result(row)


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
