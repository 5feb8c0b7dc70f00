"""Issue 21, item 6: hypothesis fuzz targets for the three parsers a webhook delivery meets before the
database: the Stripe-Signature parser (gateway/webhooks/signature.py), the envelope parser
(gateway/webhooks/envelope.py: `parse_event`) and the payload adapter (gateway/stripe_payload.py).

Each may refuse what it is given, in its own documented way (SignatureError, BadRequest), and nothing else:
no other exception, whatever the bytes. Inputs mix random data with the values of issue 21 (NUL, lone
surrogates, numbers out of range, 1000-level nesting) and with near-valid Stripe shapes, so the deep paths run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import stripe_payload as sp
from gateway.errors import BadRequest
from gateway.input_rules import json_bytes_problem, text_problem, value_problem
from gateway.webhooks.envelope import StripeEvent, UnstorableEvent, event_from_payload, parse_event
from gateway.webhooks.signature import SignatureError, parse_header, sign, verify_signature

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECRET = "whsec_fuzz_" + "f" * 24
NOW = 1_700_000_000

EVENT_TYPES = st.sampled_from(
    [
        "checkout.session.completed",
        "checkout.session.expired",
        "checkout.session.async_payment_succeeded",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "charge.dispute.created",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.created",
        "",
        "a\x00b",
    ]
)
ISSUE_TEXT = st.sampled_from(["a\x00b", "\ud800", "x\udfff", "", "evt_", "cs_\x00", "9" * 30, "²"])
ISSUE_NUMBERS = st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**15, 10**30, 1e308, float("inf"), float("nan")])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), ISSUE_TEXT, ISSUE_NUMBERS
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "id",
            "object",
            "metadata",
            "order_id",
            "user_id",
            "customer",
            "currency",
            "amount",
            "amount_total",
            "amount_refunded",
            "payment_intent",
            "charge",
            "latest_charge",
            "charges",
            "data",
            "lines",
            "price",
            "items",
            "parent",
            "subscription_details",
            "subscription",
            "status",
            "payment_status",
            "mode",
            "current_period_end",
            "current_period_start",
            "refunds",
            "invoice",
            "last_payment_error",
            "client_reference_id",
            "evidence_details",
            "cancel_at_period_end",
        ]
    ),
    st.text(max_size=8),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6))
OBJECTS = st.dictionaries(KEYS, JSON, max_size=10)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"id": "deep"}
    for _ in range(depth):
        value = {"data": value}
    return value


@st.composite
def near_events(draw: st.DrawFn) -> dict[str, Any]:
    """A Stripe event shape whose every field may be wrong, hostile or missing."""
    event: dict[str, Any] = {
        "id": draw(st.one_of(st.just("evt_fuzz"), ISSUE_TEXT.map(lambda t: "evt_" + t), SCALARS)),
        "object": "event",
        "type": draw(st.one_of(EVENT_TYPES, SCALARS)),
        "created": draw(st.one_of(st.just(NOW), ISSUE_NUMBERS, SCALARS)),
        "livemode": draw(st.one_of(st.booleans(), SCALARS)),
        "api_version": draw(st.one_of(st.just("2025-03-31.basil"), SCALARS)),
        "data": draw(
            st.one_of(
                st.builds(lambda obj: {"object": obj}, OBJECTS),
                st.integers(1, 1000).map(lambda depth: {"object": nested(depth)}),
                JSON,
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=2)):
        event.pop(key, None)
    return event


def encode(event: Any) -> bytes:
    """JSON bytes as a sender would write them; lone surrogates travel as escapes, NaN as Python writes it."""
    try:
        return orjson.dumps(event)
    except TypeError:  # a surrogate, an integer beyond 64 bits, a nesting orjson refuses
        try:
            return json.dumps(event).encode()
        except (ValueError, RecursionError):
            return b"{}"


# ------------------------------------------------------------------ signature parser


@FUZZ
@given(header=st.one_of(st.text(), st.text(st.sampled_from("tv01=,abcdef \t\x00é\ud800")), st.none()))
def test_the_signature_parser_refuses_junk_only_with_signature_error(header: str | None) -> None:
    if header is not None:
        try:
            timestamp, signatures = parse_header(header)
        except SignatureError as exc:
            assert exc.unsigned
        else:
            assert isinstance(timestamp, int) and all(len(s) == 64 for s in signatures)
    try:
        verify_signature(b"{}", header, [SECRET], 300, now=NOW)
    except SignatureError as exc:
        assert exc.reason in ("missing_header", "malformed_header", "no_matching_signature")
    else:
        raise AssertionError(f"a random header was accepted: {header!r}")


@FUZZ
@given(
    body=st.binary(max_size=512),
    timestamp=st.one_of(st.just(NOW), st.integers(0, 10**12)),
    extra=st.lists(st.sampled_from(["v0=abc", "v1=" + "0" * 64, "t=1", "junk", " ", "v1="]), max_size=3),
    secrets=st.lists(st.sampled_from([SECRET, "", " ", "whsec_other_" + "o" * 20]), min_size=1, max_size=3),
)
def test_a_signed_body_verifies_whatever_surrounds_its_signature(
    body: bytes, timestamp: int, extra: list[str], secrets: list[str]
) -> None:
    header = ",".join([sign(body, SECRET, timestamp), *extra])
    try:
        index = verify_signature(body, header, secrets, 300, now=NOW)
    except SignatureError as exc:
        assert exc.reason in ("no_matching_signature", "timestamp_out_of_tolerance", "no_secret_configured")
        assert not exc.unsigned
        assert SECRET not in secrets or exc.reason == "timestamp_out_of_tolerance"
    else:
        assert secrets[index] == SECRET and abs(NOW - timestamp) <= 300


# ------------------------------------------------------------------ envelope parser


def parse_or_refuse(body: bytes) -> StripeEvent | None:
    """The event, or None when it is refused (400) or cannot be stored as sent (recorded ignored, with a reason
    and an id the ledger can store)."""
    try:
        return parse_event(body, required_livemode=None)
    except BadRequest as exc:
        assert exc.code in ("invalid_event", "livemode_mismatch")
        return None
    except UnstorableEvent as exc:
        assert exc.unstorable.id.startswith("evt_") and text_problem(exc.unstorable.id) is None
        assert exc.unstorable.reason
        return None


@FUZZ
@given(body=st.binary(max_size=256))
def test_the_envelope_parser_refuses_random_bytes_with_a_400(body: bytes) -> None:
    parse_or_refuse(body)


@FUZZ
@given(event=near_events())
def test_the_envelope_parser_takes_or_refuses_near_events(event: dict[str, Any]) -> None:
    parsed = parse_or_refuse(encode(event))
    if parsed is not None:
        assert parsed.id.startswith("evt_")
        assert isinstance(parsed.ids, sp.RelatedIds)  # the adapter reads the ids of anything parse_event takes
        event_from_payload(parsed.raw)


@FUZZ
@given(event=near_events())
def test_the_input_rule_names_what_the_database_could_not_store(event: dict[str, Any]) -> None:
    """What a webhook hands the ledger: either storable, or a reason (the lead's core records it as ignored)."""
    body = encode(event)
    problem = json_bytes_problem(body)
    parsed = parse_or_refuse(body)
    if parsed is not None and problem is None:
        assert value_problem(parsed.raw) is None
        orjson.dumps(parsed.raw)  # asyncpg's jsonb encoder takes it


def test_a_1000_level_nested_event_and_the_issue_values() -> None:
    base = {"id": "evt_1", "type": "invoice.paid", "created": NOW, "livemode": False}
    deep = b'{"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": ' + b'{"a": ' * 1000
    assert json_bytes_problem(deep + b"1" + b"}" * 1002) == "nesting_too_deep"
    cases = {
        "nul_character": {**base, "data": {"object": {"id": "in_1", "customer": "cus_\x00"}}},
        "lone_surrogate": {**base, "data": {"object": {"id": "in_\ud800"}}},
    }
    for reason, event in cases.items():
        body = encode(event)
        assert json_bytes_problem(body) == reason
    created = {**base, "created": 10**15, "data": {"object": {"id": "in_1"}}}
    assert json_bytes_problem(encode(created)) is None  # a bigint: its timestamp is the envelope's to check
    with pytest.raises(UnstorableEvent) as refused:
        parse_event(encode(created), required_livemode=None)
    assert (refused.value.unstorable.id, refused.value.unstorable.reason) == ("evt_1", "timestamp_out_of_range")


# ------------------------------------------------------------------ payload adapter


def adapter_functions() -> dict[str, Callable[..., Any]]:
    return {
        name: function
        for name, function in vars(sp).items()
        if inspect.isfunction(function) and function.__module__ == sp.__name__ and not name.startswith("_")
    }


def call(function: Callable[..., Any], event_type: str, obj: Any) -> Any:
    params = list(inspect.signature(function).parameters)
    if params == ["event_type", "obj"]:
        return function(event_type, obj)
    if params == ["obj", "key"]:
        return function(obj, "order_id")
    return function(obj)


def test_every_adapter_function_is_fuzzed() -> None:
    for name, function in adapter_functions().items():
        params = list(inspect.signature(function).parameters)
        assert len(params) == 1 or params in (["event_type", "obj"], ["obj", "key"]), name


@FUZZ
@given(event_type=EVENT_TYPES, obj=OBJECTS)
def test_the_payload_adapter_reads_any_object_without_raising(event_type: str, obj: dict[str, Any]) -> None:
    for function in adapter_functions().values():
        call(function, event_type, obj)


@FUZZ
@given(event_type=EVENT_TYPES, value=JSON)
def test_the_payload_adapter_reads_any_json_value_without_raising(event_type: str, value: Any) -> None:
    for name, function in adapter_functions().items():
        if name in ("id_of", "event_object", "event_previous_attributes"):
            call(function, event_type, value)  # these take any value
        elif isinstance(value, dict):
            call(function, event_type, value)
