"""The one rule for what a client may send: values PostgreSQL can store, checked before any query.

PostgreSQL refuses some values Python and JSON accept, and the refusal comes back from the database as an error
(a 500, or a webhook event that is never recorded):

- text with NUL (U+0000): `text` and `jsonb` cannot hold it;
- lone surrogates (U+D800..U+DFFF): not valid UTF-8. Python's `json` decodes `"\\ud800"` into one, and aiohttp
  decodes header bytes that are not UTF-8 into them (`surrogateescape`);
- integers outside `bigint` and numbers that are not finite;
- documents nested deeper than the JSON encoder and the database take (`orjson` stops at 255 levels);
- timestamps that cannot be moved to UTC (`0001-01-01T00:00:00+14:00`) or lie outside PostgreSQL's range.

`value_problem` inspects any parsed JSON value and returns the reason (a short, bounded word: safe as a metric
label or a ledger reason) or None. The edge refuses such requests with 422 (`refuse_unstorable`); the webhook
records such events in a storable form (see gateway/webhooks).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

from gateway.errors import ValidationFailed

Problem = Literal[
    "nul_character",
    "lone_surrogate",
    "integer_out_of_range",
    "number_not_finite",
    "nesting_too_deep",
    "timestamp_out_of_range",
]

BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
# Stripe's events nest about ten levels; orjson (the JSON encoder of asyncpg's jsonb here) refuses more than 254.
MAX_DEPTH: Final = 64
UNSTORABLE_CODE: Final = "unstorable_input"


def text_problem(text: str) -> Problem | None:
    """Why PostgreSQL could not store `text`, or None."""
    if "\x00" in text:
        return "nul_character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "lone_surrogate"
    return None


def integer_problem(number: int) -> Problem | None:
    return None if BIGINT_MIN <= number <= BIGINT_MAX else "integer_out_of_range"


def timestamp_problem(moment: datetime) -> Problem | None:
    """An aware datetime that cannot be stored as `timestamptz` (it overflows when moved to UTC)."""
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return "timestamp_out_of_range"
    return None


def value_problem(value: object, *, max_depth: int = MAX_DEPTH) -> Problem | None:
    """Why a parsed JSON value (dicts, lists, str, int, float, bool, None) could not be stored as sent, or None.

    Iterative, so a deeply nested value cannot exhaust the Python stack; every key and every string is checked.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
        elif isinstance(item, bool) or item is None:
            problem = None
        elif isinstance(item, int):
            problem = integer_problem(item)
        elif isinstance(item, float):
            problem = None if math.isfinite(item) else "number_not_finite"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return "nesting_too_deep"
            if isinstance(item, dict):
                for key, inner in item.items():
                    key_problem = text_problem(key) if isinstance(key, str) else None
                    if key_problem is not None:
                        return key_problem
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)
            problem = None
        else:
            problem = None
        if problem is not None:
            return problem
    return None


def json_bytes_problem(raw: bytes) -> Problem | None:
    """Why the JSON document `raw` could not be stored as sent, or None: it can, or it is not JSON at all (the
    caller's own parser reports that).

    orjson refuses a lone surrogate (`"\\ud800"`) that Python's `json` accepts, and Python's `json` runs out of
    stack where orjson does not (1000 levels), so both are asked.
    """
    try:
        return value_problem(orjson.loads(raw))
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return "nesting_too_deep"
    except ValueError:  # not UTF-8 or not JSON
        return None
    return value_problem(value)


def parse_ascii_int(raw: str) -> int | None:
    """A decimal integer written in ASCII digits only (Python's `int` also takes "١٢", "1_0" and " 7 ")."""
    if not raw or len(raw) > 20 or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def refuse_unstorable(value: object, field: str = "") -> None:
    """422 (`unstorable_input`) when `value` could not be stored as sent."""
    problem = value_problem(value)
    if problem is not None:
        raise ValidationFailed(
            "The request holds a value that cannot be stored",
            code=UNSTORABLE_CODE,
            details=[{"field": field, "problem": problem}],
        )
