"""Stripe-Signature verification (gateway.webhooks.signature): pure, no database."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
import stripe
from prometheus_client import REGISTRY

from gateway.webhooks.signature import (
    SIGNATURE_FAILURE_REASONS,
    SignatureError,
    compute_signature,
    count_failure,
    parse_header,
    sign,
    verify_signature,
)
from tests.stripe_events import fixture_bytes

SECRET = "whsec_test_" + "a" * 24
OLD_SECRET = "whsec_old_" + "b" * 24
NEW_SECRET = "whsec_new_" + "c" * 24
NOW = 1_700_000_000
BODY = fixture_bytes("stripe-events/sync-engine/payment_intent.succeeded__2020-03-02_1IlYUUJDPo.json")


def reason(body: bytes, header: str | None, secrets: list[str], *, tolerance: int = 300, now: float = NOW) -> str:
    with pytest.raises(SignatureError) as info:
        verify_signature(body, header, secrets, tolerance, now=now)
    assert info.value.reason in SIGNATURE_FAILURE_REASONS
    return info.value.reason


def v1(body: bytes, secret: str, ts: int) -> str:
    return compute_signature(body, secret, ts)


def test_valid_signature_on_real_fixture_bytes() -> None:
    assert verify_signature(BODY, sign(BODY, SECRET, NOW), [SECRET], 300, now=NOW) == 0


def test_signature_matches_hmac_definition_and_stripe_sdk() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, NOW) == f"t={NOW},v1={expected}"
    # Stripe's own helper produces the same header, and its verifier accepts ours.
    sdk_header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=NOW)
    assert sdk_header == sign(BODY, SECRET, NOW)


def test_several_v1_any_may_match() -> None:
    header = f"t={NOW},v1={'0' * 64},v1={v1(BODY, SECRET, NOW)},v1={'f' * 64}"
    assert verify_signature(BODY, header, [SECRET], 300, now=NOW) == 0


def test_v0_is_ignored() -> None:
    # A valid-looking v0 next to a valid v1: accepted (v0 plays no part).
    header = f"t={NOW},v0={'0' * 64},v1={v1(BODY, SECRET, NOW)}"
    assert verify_signature(BODY, header, [SECRET], 300, now=NOW) == 0
    # A v0 carrying the correct HMAC does not authenticate anything on its own.
    only_v0 = f"t={NOW},v0={v1(BODY, SECRET, NOW)}"
    assert reason(BODY, only_v0, [SECRET]) == "malformed_header"  # no v1 at all: not a Stripe signature


def test_stale_timestamp_refused() -> None:
    ts = NOW - 301
    assert reason(BODY, sign(BODY, SECRET, ts), [SECRET]) == "timestamp_out_of_tolerance"
    assert verify_signature(BODY, sign(BODY, SECRET, NOW - 300), [SECRET], 300, now=NOW) == 0


def test_future_timestamp_refused() -> None:
    ts = NOW + 301
    assert reason(BODY, sign(BODY, SECRET, ts), [SECRET]) == "timestamp_out_of_tolerance"
    assert verify_signature(BODY, sign(BODY, SECRET, NOW + 300), [SECRET], 300, now=NOW) == 0


def test_tolerance_is_configurable() -> None:
    header = sign(BODY, SECRET, NOW - 100)
    assert reason(BODY, header, [SECRET], tolerance=60) == "timestamp_out_of_tolerance"
    assert verify_signature(BODY, header, [SECRET], 120, now=NOW) == 0


def test_wrong_secret() -> None:
    assert reason(BODY, sign(BODY, "whsec_other", NOW), [SECRET]) == "no_matching_signature"


def test_signature_checked_before_timestamp() -> None:
    # An unauthenticated sender with an old timestamp learns "no match", not anything about our clock.
    assert reason(BODY, sign(BODY, "whsec_other", NOW - 10_000), [SECRET]) == "no_matching_signature"


def test_rotated_secrets_return_matching_index() -> None:
    secrets = [OLD_SECRET, NEW_SECRET]
    assert verify_signature(BODY, sign(BODY, OLD_SECRET, NOW), secrets, 300, now=NOW) == 0
    assert verify_signature(BODY, sign(BODY, NEW_SECRET, NOW), secrets, 300, now=NOW) == 1
    # During a roll Stripe sends one v1 per secret: the first configured secret that matches wins.
    both = f"t={NOW},v1={v1(BODY, NEW_SECRET, NOW)},v1={v1(BODY, OLD_SECRET, NOW)}"
    assert verify_signature(BODY, both, secrets, 300, now=NOW) == 0
    assert verify_signature(BODY, both, [NEW_SECRET], 300, now=NOW) == 0


def test_blank_secret_entries_keep_indexes() -> None:
    assert verify_signature(BODY, sign(BODY, NEW_SECRET, NOW), ["", NEW_SECRET], 300, now=NOW) == 1


@pytest.mark.parametrize("secrets", [[], [""], ["  "]])
def test_no_secret_configured(secrets: list[str]) -> None:
    assert reason(BODY, sign(BODY, SECRET, NOW), secrets) == "no_secret_configured"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header(header: str | None) -> None:
    assert reason(BODY, header, [SECRET]) == "missing_header"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=abc",  # no timestamp
        f"t=,v1={'0' * 64}",
        f"t=abc,v1={'0' * 64}",
        f"t=-5,v1={'0' * 64}",
        f"t=1.5,v1={'0' * 64}",
        ",,,",
    ],
)
def test_malformed_header(header: str) -> None:
    assert reason(BODY, header, [SECRET]) == "malformed_header"


def test_malformed_pieces_are_tolerated() -> None:
    good = v1(BODY, SECRET, NOW)
    header = f" t={NOW} , junk, =x, v2=zzz, v1=, v1={good} ,scheme=1=2"
    assert verify_signature(BODY, header, [SECRET], 300, now=NOW) == 0
    # Only the first `t` counts (as in Stripe's SDK).
    two_t = f"t={NOW},t={NOW + 1},v1={v1(BODY, SECRET, NOW + 1)}"
    assert reason(BODY, two_t, [SECRET]) == "no_matching_signature"


def test_timestamp_without_signature() -> None:
    assert reason(BODY, f"t={NOW}", [SECRET]) == "malformed_header"


def test_non_ascii_signature_does_not_crash() -> None:
    header = f"t={NOW},v1=é{'0' * 63}"
    assert reason(BODY, header, [SECRET]) == "malformed_header"


@pytest.mark.parametrize(
    ("header", "expected", "unsigned"),
    [
        (None, "missing_header", True),
        ("", "missing_header", True),
        ("junk", "malformed_header", True),
        (f"t={NOW},v1=deadbeef", "malformed_header", True),  # not a SHA-256: not a signature at all
        (f"t={NOW},v1={'0' * 64}".upper(), "malformed_header", True),
        (f"v1={'0' * 64}", "malformed_header", True),
        (f"t={NOW},v1={'0' * 64}", "no_matching_signature", False),  # well-formed, wrong secret: pages
        (f"t={NOW - 3600},v1=SIGNED", "timestamp_out_of_tolerance", False),
    ],
)
def test_unsigned_deliveries_are_told_apart_from_wrong_signatures(
    header: str | None, expected: str, unsigned: bool
) -> None:
    if header is not None and "SIGNED" in header:
        header = sign(BODY, SECRET, NOW - 3600)
    with pytest.raises(SignatureError) as caught:
        verify_signature(BODY, header, [SECRET], 300, now=NOW)
    assert (caught.value.reason, caught.value.unsigned) == (expected, unsigned)


def test_count_failure_keeps_unsigned_deliveries_in_their_own_metric() -> None:
    def samples() -> tuple[float, float, float]:
        return (
            REGISTRY.get_sample_value("stripe_webhook_unsigned_total", {"reason": "malformed_header"}) or 0.0,
            REGISTRY.get_sample_value("stripe_webhook_unsigned_total", {"reason": "no_matching_signature"}) or 0.0,
            REGISTRY.get_sample_value("stripe_webhook_signature_failures_total", {"reason": "malformed_header"}) or 0.0,
        )

    before = samples()
    count_failure(SignatureError("malformed_header"))
    count_failure(SignatureError("no_matching_signature"))
    after = samples()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b + b" ",
        lambda b: b.replace(b'"amount": 1000', b'"amount": 1001'),
        lambda b: b.replace(b"\n", b"\r\n"),
        lambda b: b[:-1],
    ],
)
def test_body_tampering_detected(tamper: Callable[[bytes], bytes]) -> None:
    header = sign(BODY, SECRET, NOW)
    tampered = tamper(BODY)
    assert tampered != BODY
    assert reason(tampered, header, [SECRET]) == "no_matching_signature"


def test_signature_is_over_raw_bytes_not_reparsed_json() -> None:
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reason(reserialised, sign(BODY, SECRET, NOW), [SECRET]) == "no_matching_signature"


def test_parse_header() -> None:
    a, c = "a" * 64, "c" * 64
    assert parse_header(f"t=12,v1={a},v0=b,v1={c},v1=short") == (12, [a, c])


def test_default_now_is_wall_clock() -> None:
    ts = int(time.time())
    assert verify_signature(BODY, sign(BODY, SECRET, ts), [SECRET], 300) == 0
