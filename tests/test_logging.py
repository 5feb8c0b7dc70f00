"""JSON logs: one line per record (time, level, message, requestId); secrets and personal data redacted
wherever they appear: extra fields (nested too), the message text, exception text."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway import context
from gateway.log import REDACTED, JsonFormatter, configure, redact, scrub_text

SECRETS = [
    "sk_live" + "_51HxYzAbCdEf0123456789",
    "sk_test_51HxYzAbCdEf0123456789",
    "rk_live" + "_51HxYzAbCdEf0123456789",
    "pk_live_51HxYzAbCdEf0123456789",
    "whsec_0123456789abcdefABCDEF",
    "alice@example.com",
    "bob.smith+shop@mail.example.co.uk",
    "hunter2-password-value",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXZhbHVl",
    "refresh-token-value-123",
    "session-cookie-value-456",
    "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
    "card-body-secret-789",
]

log = logging.getLogger("gateway.test.logging")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        log.removeHandler(handler)
        log.setLevel(old)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    raw = stream.getvalue().splitlines()
    return [orjson.loads(line) for line in raw]


def assert_clean(stream: io.StringIO) -> None:
    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text, secret
    for fragment in ("hunter2", "alice@", "sk_live_", "whsec_0", "eyJhbGci"):
        assert fragment not in text, fragment


def test_one_json_line_per_record_with_the_standard_fields(captured: io.StringIO) -> None:
    log.info("first")
    log.warning("second\nwith a newline")
    entries = lines(captured)
    assert len(entries) == 2
    for entry in entries:
        assert {"time", "level", "message", "requestId"} <= set(entry)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert [e["level"] for e in entries] == ["info", "warning"]
    assert entries[1]["message"] == "second\nwith a newline"
    assert entries[0]["requestId"] is None  # outside a request


def test_request_id_and_bound_fields_inside_a_request(captured: io.StringIO) -> None:
    token = context.current.set(context.RequestContext(request_id="req-logging-0001"))
    try:
        context.bind(orderId="order-9", stripeEventId="evt_123", customerEmail="alice@example.com")
        log.info("handled", extra={"status": "processed", "durationMs": 1.5})
    finally:
        context.current.reset(token)
    (entry,) = lines(captured)
    assert entry["requestId"] == "req-logging-0001"
    assert entry["orderId"] == "order-9"
    assert entry["stripeEventId"] == "evt_123"
    assert entry["status"] == "processed"
    assert entry["durationMs"] == 1.5
    assert entry["customerEmail"] == REDACTED
    assert_clean(captured)


def test_denied_keys_are_redacted_wherever_they_are(captured: io.StringIO) -> None:
    log.info(
        "headers seen",
        extra={
            "authorization": "Bearer " + SECRETS[8],
            "headers": {
                "Authorization": "Basic dXNlcjpodW50ZXIy",
                "Cookie": "refresh=" + SECRETS[10],
                "Set-Cookie": "refresh=" + SECRETS[10] + "; HttpOnly",
                "Stripe-Signature": SECRETS[11],
                "X-Request-ID": "kept-request-id",
            },
            "user": {"email": SECRETS[5], "password": SECRETS[7], "profile": {"refresh_token": SECRETS[9]}},
            "attempts": [{"api_key": SECRETS[0]}, {"client_secret": "pi_123_secret_456"}],
            "request_body": b'{"card": "' + SECRETS[12].encode() + b'"}',
            "payload": {"object": {"receipt_email": SECRETS[6]}},
            "webhookSecret": SECRETS[4],
            "orderId": "order-1",
        },
    )
    (entry,) = lines(captured)
    assert entry["authorization"] == REDACTED
    assert entry["headers"]["Authorization"] == REDACTED
    assert entry["headers"]["Cookie"] == REDACTED
    assert entry["headers"]["Set-Cookie"] == REDACTED
    assert entry["headers"]["Stripe-Signature"] == REDACTED
    assert entry["headers"]["X-Request-ID"] == "kept-request-id"
    assert entry["user"]["email"] == REDACTED
    assert entry["user"]["password"] == REDACTED
    assert entry["user"]["profile"]["refresh_token"] == REDACTED
    assert entry["attempts"] == [{"api_key": REDACTED}, {"client_secret": REDACTED}]
    assert entry["request_body"] == REDACTED
    assert entry["payload"] == REDACTED
    assert entry["webhookSecret"] == REDACTED
    assert entry["orderId"] == "order-1"
    assert_clean(captured)


def test_values_under_innocent_keys_are_scrubbed(captured: io.StringIO) -> None:
    log.info(
        "something happened",
        extra={
            "reason": f"customer {SECRETS[5]} used key {SECRETS[0]}",
            "detail": [f"secret {SECRETS[4]}", ("tuple", SECRETS[1])],
            "raw": SECRETS[2].encode(),  # bytes
            "exc": ValueError(f"bad {SECRETS[6]} {SECRETS[3]}"),  # an object rendered with str()
            "items": {SECRETS[5]: "a key that is an e-mail"},
        },
    )
    assert_clean(captured)
    (entry,) = lines(captured)
    assert entry["reason"] == f"customer {REDACTED} used key {REDACTED}"


def test_message_text_and_arguments_are_scrubbed(captured: io.StringIO) -> None:
    log.info("login failed for %s", SECRETS[5])
    log.info(f"calling Stripe with {SECRETS[0]} and Authorization: Bearer {SECRETS[8]}")
    log.info("retry with password=%s token=%s", SECRETS[7], SECRETS[9])
    log.info('json {"password": "%s", "client_secret": "%s", "cookie": "%s"}', SECRETS[7], SECRETS[12], SECRETS[10])
    log.info("header Stripe-Signature: %s", SECRETS[11])
    log.info("webhook secret whsec rotation: %s", SECRETS[4])
    assert_clean(captured)
    messages = [e["message"] for e in lines(captured)]
    assert messages[0] == f"login failed for {REDACTED}"


def test_exception_text_is_scrubbed(captured: io.StringIO) -> None:
    try:
        raise RuntimeError(f"Stripe refused {SECRETS[0]} for {SECRETS[5]} (password={SECRETS[7]})")
    except RuntimeError:
        log.exception("call failed")
    (entry,) = lines(captured)
    assert "RuntimeError" in entry["exception"]
    assert "Traceback" in entry["exception"]
    assert_clean(captured)


def test_the_standard_fields_cannot_be_overwritten_by_extra(captured: io.StringIO) -> None:
    token = context.current.set(context.RequestContext(request_id="req-logging-0002"))
    try:
        log.info("real message", extra={"requestId": "forged", "level": "debug", "time": "yesterday"})
    finally:
        context.current.reset(token)
    (entry,) = lines(captured)
    assert entry["requestId"] == "req-logging-0002"
    assert entry["level"] == "info"
    assert entry["time"] != "yesterday"
    assert entry["message"] == "real message"


@pytest.mark.parametrize("secret", SECRETS[:5] + SECRETS[8:9])
def test_scrub_text_removes_keys_and_emails(secret: str) -> None:
    assert secret not in scrub_text(f"before {secret} after")
    assert scrub_text(f"before {secret} after").startswith("before ")


def test_scrub_text_keeps_ordinary_ids() -> None:
    text = "order 3f2a evt_1NqkHL2eZvKYlo2C cs_test_a1b2 pi_3Mtw ch_3Mtw re_1 in_1 sub_1 cus_1 price_1"
    assert scrub_text(text) == text


def test_redact_is_recursive_and_keeps_numbers() -> None:
    assert redact({"a": [{"token": "x"}, 1, None, True], "n": 2.5}) == {
        "a": [{"token": REDACTED}, 1, None, True],
        "n": 2.5,
    }


def test_configure_writes_json_lines_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("INFO")
        logging.getLogger("gateway.test.configure").info("configured %s", SECRETS[5])
        logging.getLogger("gateway.test.configure").debug("not shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    entry = orjson.loads(out[0])
    assert entry["message"] == f"configured {REDACTED}"
    assert entry["level"] == "info"
