"""Who is the client: the direct peer, or the address a trusted proxy reports in X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

UNKNOWN = "unknown"  # no peer address (a Unix socket)
VERDICTS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class ClientAddress:
    ip: str
    secure: bool


class TrustedProxies:
    """The proxy networks whose X-Forwarded-* headers are believed (TRUSTED_PROXIES).

    The verdict on each address is kept (at most VERDICTS_KEPT, least recently used out): behind a load balancer
    every request asks about the same few proxy addresses, and parsing them cost several microseconds a request.
    """

    def __init__(self, cidrs: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.verdict = functools.lru_cache(maxsize=VERDICTS_KEPT)(self._verdict)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def _verdict(self, ip: str) -> bool | None:
        """True: a trusted proxy; False: another address; None: not an IP address."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # IPv4 peer of a dual-stack socket
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


def resolve(
    peer: str | None,
    forwarded_for: str | None,
    forwarded_proto: str | None,
    direct_tls: bool,
    trusted: TrustedProxies,
) -> ClientAddress:
    """Walk X-Forwarded-For from the right, skipping trusted proxies; the first untrusted hop is the client.

    Headers are believed only when the direct peer itself is a trusted proxy, so a client cannot spoof them.
    """
    peer = peer or UNKNOWN
    if not trusted or not trusted.verdict(peer):
        return ClientAddress(peer, direct_tls)
    client = peer
    if forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            verdict = trusted.verdict(hop)
            if verdict is None:
                break  # garbage in the header: stop at the last trusted address
            client = hop
            if not verdict:
                break
    proto = (forwarded_proto or "").split(",")[0].strip().lower()
    return ClientAddress(client, direct_tls or proto == "https")


@functools.lru_cache(maxsize=8192)  # per request on the hot path; clients repeat
def rate_limit_key(ip: str) -> str:
    """IPv6 clients are keyed by their /64: one host usually owns the whole prefix."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
