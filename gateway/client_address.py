"""Who is the client: the direct peer, or the address a trusted proxy reports in X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"  # no peer address (a Unix socket)


@dataclass(frozen=True, slots=True)
class ClientAddress:
    ip: str
    secure: bool


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _is_trusted(ip: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:  # IPv4 peer of a dual-stack socket
        address = address.ipv4_mapped
    return any(address in net for net in trusted)


def resolve(
    peer: str | None,
    forwarded_for: str | None,
    forwarded_proto: str | None,
    direct_tls: bool,
    trusted: Sequence[IPNetwork],
) -> ClientAddress:
    """Walk X-Forwarded-For from the right, skipping trusted proxies; the first untrusted hop is the client.

    Headers are believed only when the direct peer itself is a trusted proxy, so a client cannot spoof them.
    """
    peer = peer or UNKNOWN
    if not trusted or not _is_trusted(peer, trusted):
        return ClientAddress(peer, direct_tls)
    client = peer
    if forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage in the header: stop at the last trusted address
            client = hop
            if not _is_trusted(hop, trusted):
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
