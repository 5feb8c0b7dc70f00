"""Stripe-Signature verification on the raw request body.

Pure functions, no logging (the webhook view reports the outcome; `count_failure` counts it). The header looks like

    Stripe-Signature: t=1492774577,v1=5257a869e7...,v1=6ffbb59b2300...,v0=6ffbb59b2300...

The signed payload is `f"{t}.".encode() + raw_body`, signed with HMAC-SHA256 under each endpoint secret
(`whsec_...`); Stripe sends one `v1` per active secret while a secret is being rolled. Every `v1` value is
compared in constant time against the signature computed with every configured secret, so the old and the
new secret both work during a rotation. Other schemes (`v0`, test-mode legacy) are ignored, as Stripe's SDKs
do.

Parsing follows Stripe's SDK and tolerates junk: pieces are split on `,`, each on the first `=`, surrounding
whitespace is dropped and pieces without `=` or with an unknown key are skipped. The first `t` wins. The
header is malformed when there is no usable integer `t` or no `v1` that could be a signature (64 lowercase
hex digits, a SHA-256).

Failures fall in two classes (`SignatureError.unsigned`), which the metrics and alerts keep apart:

- unsigned: no header, or one that is not a Stripe signature (`missing_header`, `malformed_header`). Anybody
  on the internet can send these; they are counted (`stripe_webhook_unsigned_total`) and never page;
- signed: a well-formed signature that matches no secret, a timestamp out of tolerance, or no secret
  configured. Only a misconfiguration (or Stripe itself) produces these at any rate: they page.

Order of checks (as in Stripe's SDK): the signature first, then the timestamp, so an unauthenticated sender
learns nothing about the clock. The timestamp must lie within `tolerance` seconds of now in both directions
(Stripe's SDK only refuses old timestamps; a timestamp from the future is refused here too).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from typing import Final, Literal

from gateway import metrics

SignatureFailure = Literal[
    "missing_header",
    "malformed_header",
    "no_matching_signature",
    "timestamp_out_of_tolerance",
    "no_secret_configured",
]

SIGNATURE_FAILURE_REASONS: Final[tuple[SignatureFailure, ...]] = (
    "missing_header",
    "malformed_header",
    "no_matching_signature",
    "timestamp_out_of_tolerance",
    "no_secret_configured",
)

DEFAULT_TOLERANCE: Final = 300
EXPECTED_SCHEME: Final = "v1"

UNSIGNED_REASONS: Final[frozenset[SignatureFailure]] = frozenset({"missing_header", "malformed_header"})

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # seconds since the epoch; 12 digits is far beyond year 30000
_SIGNATURE = re.compile(r"[0-9a-f]{64}")  # hex of an HMAC-SHA256


class SignatureError(Exception):
    """Verification failed; `reason` is one of SIGNATURE_FAILURE_REASONS (a metric label, never secret)."""

    def __init__(self, reason: SignatureFailure) -> None:
        super().__init__(reason)
        self.reason: SignatureFailure = reason

    @property
    def unsigned(self) -> bool:
        """True when the delivery carried no Stripe signature at all (noise); False for a signature that is
        well-formed but wrong, late, or checked against no secret (a configuration problem)."""
        return self.reason in UNSIGNED_REASONS


def count_failure(error: SignatureError) -> None:
    """Count a failed verification: by reason, and unsigned deliveries in their own metric."""
    metrics.WEBHOOK_SIGNATURE_FAILURES.labels(error.reason).inc()
    if error.unsigned:
        metrics.WEBHOOK_UNSIGNED.labels(error.reason).inc()


def parse_header(header: str) -> tuple[int, list[str]]:
    """Return (timestamp, every well-formed v1 signature); SignatureError("malformed_header") without a usable
    `t` or without any `v1` that could be a signature."""
    timestamp: int | None = None
    signatures: list[str] = []
    for piece in header.split(","):
        key, sep, value = piece.partition("=")
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if key == "t":
            if timestamp is None and _TIMESTAMP.fullmatch(value):
                timestamp = int(value)
        elif key == EXPECTED_SCHEME and _SIGNATURE.fullmatch(value):
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("malformed_header")
    return timestamp, signatures


def compute_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `"{timestamp}." + body` under `secret`."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Verify `header` against the raw `body`; return the index in `secrets` of the first secret that matches.

    Blank entries of `secrets` are skipped (their index is kept, so indexes match the configured list).
    Raises SignatureError(reason) on any failure.
    """
    usable = [(index, secret) for index, secret in enumerate(secrets) if secret and secret.strip()]
    if not usable:
        raise SignatureError("no_secret_configured")
    if header is None or not header.strip():
        raise SignatureError("missing_header")
    timestamp, candidates = parse_header(header)
    received = [c.encode("ascii") for c in candidates]  # lowercase hex only (parse_header)
    matched: int | None = None
    for index, secret in usable:
        expected = compute_signature(body, secret, timestamp).encode("ascii")
        # Compare against every candidate (no early exit inside one secret) to keep timing independent of
        # which of the v1 values matched.
        hit = False
        for candidate in received:
            hit |= hmac.compare_digest(expected, candidate)
        if hit:
            matched = index
            break
    if matched is None:
        raise SignatureError("no_matching_signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("timestamp_out_of_tolerance")
    return matched


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """A Stripe-Signature header value for `body` (tests and benchmarks)."""
    return f"t={timestamp},{EXPECTED_SCHEME}={compute_signature(body, secret, timestamp)}"
