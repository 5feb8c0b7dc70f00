"""gateway.input_rules: what PostgreSQL cannot store is found before any query (unit level)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from gateway.errors import ValidationFailed
from gateway.input_rules import (
    BIGINT_MAX,
    BIGINT_MIN,
    MAX_DEPTH,
    json_bytes_problem,
    parse_ascii_int,
    refuse_unstorable,
    text_problem,
    timestamp_problem,
    value_problem,
)


def nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):  # `levels` objects, one inside the other
        value = {"a": value}
    return value


def test_a_stripe_like_event_is_storable() -> None:
    event = {
        "id": "evt_1",
        "created": 1_700_000_000,
        "data": {"object": {"amount": 1250, "metadata": {"note": "café ☕"}, "ratio": 0.5, "paid": True}},
        "previous_attributes": None,
        "list": [1, "two", [3.0]],
    }
    assert value_problem(event) is None


def test_a_nul_inside_a_string_or_a_key() -> None:
    assert value_problem({"data": {"object": {"name": "a\x00b"}}}) == "nul_character"
    assert value_problem({"data": {"a\x00": 1}}) == "nul_character"
    assert value_problem(orjson.loads(b'{"x": ["\\u0000"]}')) == "nul_character"


def test_a_lone_surrogate_from_json() -> None:
    value = json.loads('{"data": {"object": {"name": "\\ud800"}}}')  # Python's json decodes it; orjson refuses
    assert value_problem(value) == "lone_surrogate"
    assert value_problem({"\udcff": 1}) == "lone_surrogate"  # a header byte decoded with surrogateescape
    assert text_problem("\U0001f600 paired surrogates are fine") is None


def test_integers_outside_bigint() -> None:
    assert value_problem({"created": 10**15}) is None  # fits a bigint: the timestamp check is the consumer's
    assert value_problem({"created": BIGINT_MAX}) is None
    assert value_problem({"created": BIGINT_MIN}) is None
    assert value_problem({"created": BIGINT_MAX + 1}) == "integer_out_of_range"
    assert value_problem([BIGINT_MIN - 1]) == "integer_out_of_range"
    assert value_problem({"amount": float("inf")}) == "number_not_finite"
    assert value_problem({"amount": float("nan")}) == "number_not_finite"


def test_a_1000_level_nested_object() -> None:
    deep = nested(1000)
    assert value_problem(deep) == "nesting_too_deep"
    assert value_problem(nested(MAX_DEPTH)) is None
    assert value_problem(nested(MAX_DEPTH + 1)) == "nesting_too_deep"
    # as a webhook body parses it
    raw = b'{"a":' * 1000 + b"1" + b"}" * 1000
    assert value_problem(orjson.loads(raw)) == "nesting_too_deep"
    assert json_bytes_problem(raw) == "nesting_too_deep"
    # orjson refuses 1025 levels and Python's json runs out of stack: still a reason, never an exception
    assert json_bytes_problem(b"[" * 5000 + b"]" * 5000) == "nesting_too_deep"


def test_json_bytes_problem_on_raw_bodies() -> None:
    assert json_bytes_problem(b'{"id": "evt_1", "created": 1700000000}') is None
    assert json_bytes_problem(b'{"name": "\\ud800"}') == "lone_surrogate"
    assert json_bytes_problem(b'{"name": "a\\u0000b"}') == "nul_character"
    assert json_bytes_problem(b'{"n": 9223372036854775808}') == "integer_out_of_range"  # 2**63
    assert json_bytes_problem(b"not json") is None
    assert json_bytes_problem(b"\xff\xfe") is None


def test_created_10_to_the_15_is_a_timestamp_postgresql_cannot_hold() -> None:
    with pytest.raises((OverflowError, ValueError, OSError)):
        datetime.fromtimestamp(10**15, UTC)


def test_timestamps_that_overflow_in_utc() -> None:
    assert timestamp_problem(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))) == "timestamp_out_of_range"
    assert timestamp_problem(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))) == (
        "timestamp_out_of_range"
    )
    assert timestamp_problem(datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_ascii_integers_only() -> None:
    assert parse_ascii_int("20") == 20
    for raw in ("²", "١٢", "1_0", " 7", "-1", "", "9" * 21, "+3"):
        assert parse_ascii_int(raw) is None, raw


def test_refuse_unstorable_is_a_422_with_the_reason() -> None:
    with pytest.raises(ValidationFailed) as caught:
        refuse_unstorable({"email": "a\x00@example.com"})
    assert caught.value.status == 422
    assert caught.value.code == "unstorable_input"
    assert caught.value.details == [{"field": "", "problem": "nul_character"}]
    refuse_unstorable({"email": "ada@example.com"})
