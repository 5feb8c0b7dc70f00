"""Client address: X-Forwarded-For / X-Forwarded-Proto only from a trusted proxy; IPv6 keyed by /64."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway import client_address, context
from gateway.client_address import TrustedProxies, rate_limit_key, resolve
from tests.conftest import make_settings
from tests.platform_app import tiny_app

PROXIES = TrustedProxies(["10.0.0.0/8", "192.168.1.1/32", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # no header: the peer
        ("10.0.0.5", None, "10.0.0.5"),
        ("203.0.113.9", None, "203.0.113.9"),
        # one trusted proxy in front
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.5", " 198.51.100.7 ", "198.51.100.7"),
        # several hops: walk from the right over trusted proxies, the first untrusted one is the client
        ("10.0.0.5", "198.51.100.7, 192.168.1.1", "198.51.100.7"),
        ("10.0.0.5", "198.51.100.7, 10.1.2.3, 10.0.0.9", "198.51.100.7"),
        # the client's own spoofed entries on the left are not believed
        ("10.0.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.5", "1.1.1.1, 6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
        # a chain made only of trusted proxies: the leftmost one
        ("10.0.0.5", "10.0.0.7, 10.0.0.8", "10.0.0.7"),
        # garbage: stop at the last trusted address
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),
        ("10.0.0.5", "198.51.100.7, garbage", "10.0.0.5"),
        ("10.0.0.5", "", "10.0.0.5"),
        ("10.0.0.5", ",,", "10.0.0.5"),
        # IPv6 hops
        ("2001:db8:ffff::1", "2001:db8:1:2::99", "2001:db8:1:2::99"),
        ("10.0.0.5", "2001:db8:1:2::99, 2001:db8:ffff::10", "2001:db8:1:2::99"),
    ],
)
def test_forwarded_for_from_a_trusted_proxy(peer: str, xff: str | None, expected: str) -> None:
    assert resolve(peer, xff, None, False, PROXIES).ip == expected


@pytest.mark.parametrize("peer", ["203.0.113.9", "2001:db8:1::1", "11.0.0.1", "192.168.1.2"])
def test_spoofed_header_from_an_untrusted_peer_is_ignored(peer: str) -> None:
    address = resolve(peer, "198.51.100.7", "https", False, PROXIES)
    assert address.ip == peer
    assert address.secure is False


def test_no_trusted_proxies_means_the_peer() -> None:
    address = resolve("10.0.0.5", "198.51.100.7", "https", False, TrustedProxies([]))
    assert address.ip == "10.0.0.5"
    assert address.secure is False


def test_ipv4_mapped_peer_of_a_dual_stack_listener_is_a_trusted_proxy() -> None:
    address = resolve("::ffff:10.0.0.5", "198.51.100.7", "https", False, PROXIES)
    assert address.ip == "198.51.100.7"
    assert address.secure is True


@pytest.mark.parametrize(
    ("proto", "direct_tls", "secure"),
    [
        ("https", False, True),
        ("HTTPS", False, True),
        ("https, http", False, True),
        ("http", False, False),
        ("http", True, True),
        (None, False, False),
        (None, True, True),
    ],
)
def test_forwarded_proto_from_a_trusted_proxy(proto: str | None, direct_tls: bool, secure: bool) -> None:
    assert resolve("10.0.0.5", None, proto, direct_tls, PROXIES).secure is secure


def test_missing_peer() -> None:
    assert resolve(None, "198.51.100.7", None, False, PROXIES).ip == "unknown"


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::FFFF", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("unknown", "unknown"),
    ],
)
def test_rate_limit_key(ip: str, key: str) -> None:
    assert rate_limit_key(ip) == key


def test_one_ipv6_host_rotating_addresses_shares_a_key() -> None:
    keys = {rate_limit_key(f"2001:db8:42:7:{i:x}::{i:x}") for i in range(1, 200)}
    assert keys == {"2001:db8:42:7::/64"}


# ---------------------------------------------------------------------- through the request-id middleware


async def who(request: web.Request) -> web.Response:
    ctx = context.get_context(request)
    return web.json_response({"ip": ctx.client_ip, "key": rate_limit_key(ctx.client_ip), "secure": ctx.secure})


async def make(aiohttp_client: Any, proxies: str) -> Any:
    settings = make_settings(TRUSTED_PROXIES=proxies)
    return await aiohttp_client(tiny_app(settings, [web.get("/who", who)], []))


async def test_behind_a_trusted_proxy(aiohttp_client: Any) -> None:
    client = await make(aiohttp_client, "127.0.0.1/32")  # the test client connects from 127.0.0.1
    response = await client.get(
        "/who", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7", "X-Forwarded-Proto": "https"}
    )
    assert await response.json() == {"ip": "198.51.100.7", "key": "198.51.100.7", "secure": True}
    response = await client.get("/who", headers={"X-Forwarded-For": "2001:db8:1:2::77"})
    assert await response.json() == {"ip": "2001:db8:1:2::77", "key": "2001:db8:1:2::/64", "secure": False}


async def test_spoofing_from_an_untrusted_peer(aiohttp_client: Any) -> None:
    client = await make(aiohttp_client, "10.0.0.0/8")
    response = await client.get("/who", headers={"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"})
    assert await response.json() == {"ip": "127.0.0.1", "key": "127.0.0.1", "secure": False}


def test_verdicts_are_kept_per_address_and_bounded() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    for _ in range(3):
        assert resolve("10.0.0.5", "198.51.100.7", None, False, proxies).ip == "198.51.100.7"
    info = proxies.verdict.cache_info()
    assert (info.misses, info.hits) == (2, 4)  # the peer and the hop parsed once each
    assert info.maxsize == client_address.VERDICTS_KEPT
    assert proxies.verdict("garbage") is None and proxies.verdict("10.9.9.9") is True
    assert not TrustedProxies([]) and TrustedProxies(["10.0.0.0/8"])
