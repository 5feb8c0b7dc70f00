"""Issue 21, item 2: slow and greedy clients are cut, with real sockets on 127.0.0.1 against the gateway's own
listener (`gateway.connections.start_listener`, as `gateway serve` runs it). The timeouts are short in these
settings; every client loop is bounded and far longer than the timeout it tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from gateway import connections, keys
from gateway.settings import Settings

SHORT = 0.5  # seconds: every timeout under test
PATIENCE = 15.0  # seconds a client loop may run at most: far beyond SHORT


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def serve(app_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[web.AppRunner, asyncio.Server]] = []

    async def start(**overrides: Any) -> int:
        app = app_factory(**overrides)
        settings: Settings = app[keys.SETTINGS]
        runner = connections.app_runner(app, settings)
        await runner.setup()
        listener = await connections.start_listener(runner, settings, "127.0.0.1", 0)
        started.append((runner, listener))
        port: int = listener.sockets[0].getsockname()[1]
        return port

    yield start
    for runner, listener in started:
        listener.close()
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=PATIENCE)


def error_of(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    error = orjson.loads(body)["error"]
    assert error["request_id"]
    assert b"x-request-id: " + error["request_id"].encode() in head.lower()
    return status, error["code"]


async def dribble(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes) -> bytes:
    """Send `data` one byte at a time until the server answers or closes; its answer (b"" if none)."""
    for byte in data:
        if reader.at_eof() or writer.is_closing():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        with contextlib.suppress(TimeoutError):
            answer = await asyncio.wait_for(reader.read(4096), timeout=PATIENCE / len(data))
            if answer or reader.at_eof():
                return answer + await read_until_closed(reader)
    return await read_until_closed(reader)


async def test_a_head_sent_one_byte_at_a_time_is_cut_with_a_408(serve: Any) -> None:
    port = await serve(HTTP_HEAD_TIMEOUT_SECONDS=SHORT)
    before = sample("gateway_slow_clients_total", phase="head")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 300 + b"\r\n\r\n"
        answer = await dribble(writer, reader, head)
    finally:
        writer.close()
    assert error_of(answer) == (408, "request_timeout")
    assert sample("gateway_slow_clients_total", phase="head") - before == 1


async def test_a_connection_that_sends_nothing_is_closed(serve: Any) -> None:
    port = await serve(HTTP_HEAD_TIMEOUT_SECONDS=SHORT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answer = await read_until_closed(reader)
    finally:
        writer.close()
    assert error_of(answer) == (408, "request_timeout")


async def test_an_idle_keep_alive_connection_is_closed(serve: Any) -> None:
    port = await serve(HTTP_KEEPALIVE_TIMEOUT_SECONDS=SHORT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=PATIENCE)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
        await reader.readexactly(length)
        # keep-alive: the server closes the connection once it has been idle too long
        assert await read_until_closed(reader) == b""
    finally:
        writer.close()


async def test_a_body_sent_one_byte_at_a_time_is_cut_with_a_408(serve: Any) -> None:
    port = await serve(HTTP_BODY_TIMEOUT_SECONDS=SHORT)
    before = sample("gateway_slow_clients_total", phase="body")
    body = b'{"id": "evt_slow", "padding": "' + b"x" * 300 + b'"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /stripe/webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        answer = await dribble(writer, reader, body)
    finally:
        writer.close()
    assert error_of(answer) == (408, "request_timeout")
    assert sample("gateway_slow_clients_total", phase="body") - before == 1


async def test_connections_beyond_the_cap_get_a_503(serve: Any) -> None:
    port = await serve(HTTP_MAX_CONNECTIONS=2, HTTP_HEAD_TIMEOUT_SECONDS=60)
    before = sample("gateway_connections_refused_total")
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await read_until_closed(reader)
        writer.close()
        assert error_of(answer) == (503, "too_many_connections")
        assert b"retry-after: 1" in answer.lower()
        assert sample("gateway_connections_refused_total") - before == 1
        # once a held connection is gone, a new one is served
        _, held_writer = held.pop()
        held_writer.close()
        await held_writer.wait_closed()
        for _ in range(100):  # bounded: the server sees the close after a round of the event loop
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await read_until_closed(reader)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200 "):
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        for _, held_writer in held:
            held_writer.close()
