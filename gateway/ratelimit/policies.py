"""Named rate-limit policies: a token bucket (capacity, refill per minute) and what a client is keyed by.

Both stores implement the bucket as GCRA (the "generic cell rate algorithm"): exactly a token bucket, whose
whole state is one number, the theoretical arrival time (TAT): when the bucket will be full again.
A bucket is full when TAT <= now, so a full bucket and a missing one are the same thing and can be forgotten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from gateway.settings import Settings

KeyBy = Literal["ip", "user"]

# Float arithmetic on times must not turn "exactly one token left" into zero.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    capacity: int
    refill_per_minute: float
    key_by: KeyBy = "ip"
    interval: float = field(init=False, repr=False)  # seconds for one token to come back
    burst: float = field(init=False, repr=False)  # seconds an empty bucket takes to fill up

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.refill_per_minute <= 0:
            raise ValueError(f"rate-limit policy {self.name!r}: capacity and refill must be positive")
        # Precomputed once: the in-process store reads them on every request.
        object.__setattr__(self, "interval", 60.0 / self.refill_per_minute)
        object.__setattr__(self, "burst", self.capacity * self.interval)

    @property
    def window(self) -> int:
        """The `w` of RateLimit-Policy: `capacity` requests per `window` seconds."""
        return max(1, round(self.burst))

    def policy_header(self) -> str:
        """`RateLimit-Policy: "name";q=<capacity>;w=<seconds>` (draft-ietf-httpapi-ratelimit-headers)."""
        return f'"{self.name}";q={self.capacity};w={self.window}'


class Decision(NamedTuple):
    """The answer of a store for one request.

    A store only says whether the request was allowed and when the bucket is full again; what a client is told
    follows from that and the policy, computed here once for both stores (and only when asked: the in-process
    store answers every request of the process).
    """

    allowed: bool
    reset_after: float  # seconds until the bucket is full again (its TAT minus now)
    policy: Policy

    @property
    def remaining(self) -> int:
        """Whole tokens left after this request."""
        policy = self.policy
        return max(0, int((policy.burst - self.reset_after) / policy.interval + EPSILON))

    @property
    def retry_after(self) -> float:
        """Seconds until the next request would be allowed (0 while tokens remain)."""
        return max(0.0, self.reset_after + self.policy.interval - self.policy.burst)


def retry_after_seconds(decision: Decision) -> int:
    """Retry-After is an integer, and at least 1: a client told 0 would retry at once."""
    return max(1, math.ceil(decision.retry_after - EPSILON))


def ratelimit_header(policy: Policy, decision: Decision) -> str:
    """`RateLimit: "name";r=<remaining>;t=<seconds>` (draft-ietf-httpapi-ratelimit-headers).

    A token bucket has no fixed window: `t` is when the bucket is full again, or, once it is empty, when the
    next unit comes back (the Retry-After figure).
    """
    remaining = decision.remaining
    if remaining == 0:
        seconds = retry_after_seconds(decision)
    else:
        seconds = max(0, math.ceil(decision.reset_after - EPSILON))
    return f'"{policy.name}";r={remaining};t={seconds}'


def default_policies(settings: Settings) -> dict[str, Policy]:
    """The policies routes choose from with `@route_options(rate_limit="name")`: N per minute, bursts of N."""
    return {
        policy.name: policy
        for policy in (
            Policy("webhook", settings.rate_limit_webhook_max, settings.rate_limit_webhook_max, "ip"),
            Policy("public", settings.rate_limit_public_max, settings.rate_limit_public_max, "ip"),
            Policy("auth", settings.rate_limit_auth_max, settings.rate_limit_auth_max, "ip"),
            Policy("checkout", settings.rate_limit_checkout_max, settings.rate_limit_checkout_max, "user"),
        )
    }
