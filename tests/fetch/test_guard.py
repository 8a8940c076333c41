"""The SSRF guard, with its allow-list empty: only public internet addresses may be reached, on every hop."""

from __future__ import annotations

import ipaddress

import pytest

from jobs.fetch import FetchError, GuardRefused, SsrfGuard, StaticResolver, SystemResolver, forbidden_reason
from tests.fetch.https_world import HttpsWorld

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("168.63.129.16", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("169.254.10.10", "link-local"),
    ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not a public internet address"),  # carrier-grade NAT
    ("fc00::1", "private"),
    ("::ffff:127.0.0.1", "IPv6 form of 127.0.0.1"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::127.0.0.1", "IPv6 form of 127.0.0.1"),  # IPv4-compatible (deprecated)
    ("2002:7f00:1::", "IPv6 form of 127.0.0.1"),  # 6to4
    ("64:ff9b::a00:1", "IPv6 form of 10.0.0.1"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
    ("fec0::1", "site-local"),  # deprecated, yet `is_global` in Python 3.11
    ("feff::1", "site-local"),
    ("3fff::1", "documentation"),  # RFC 9637
    ("2001:db8::1", "documentation"),
    ("192.0.0.9", "IETF protocol assignment"),  # PCP anycast: global, but no dataset host
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.88.99.1", "6to4 relay"),
    ("::1.2.3.4", "IPv4-compatible"),  # deprecated even with a public IPv4 inside
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "IETF protocol assignment"),  # Teredo, public client
    ("5f00::1", "segment-routing"),
    ("100::1", "discard"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
async def test_an_address_outside_the_public_internet_is_refused(address: str, why: str) -> None:
    guard = SsrfGuard()
    assert guard.allow == ()
    with pytest.raises(GuardRefused) as caught:
        await guard.resolve(address, 443)
    assert why in str(caught.value)
    assert "lorabot only downloads from the public internet" in str(caught.value)


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    guard = SsrfGuard(resolver=StaticResolver({"files.example.com": ["127.0.0.1"]}))
    with pytest.raises(GuardRefused, match=r"files\.example\.com \(127\.0\.0\.1\), a loopback address"):
        await guard.resolve("files.example.com", 443)


async def test_localhost_from_the_system_resolver_is_refused() -> None:
    with pytest.raises(GuardRefused, match="loopback"):
        await SsrfGuard(resolver=SystemResolver()).resolve("localhost", 443)


async def test_one_bad_address_among_good_ones_refuses_the_name() -> None:
    guard = SsrfGuard(resolver=StaticResolver({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]}))
    with pytest.raises(GuardRefused, match="private"):
        await guard.resolve("mixed.example.com", 443)


async def test_the_allow_list_lets_a_named_network_through() -> None:
    guard = SsrfGuard(allow=["127.0.0.0/8"], resolver=StaticResolver({"lan": ["127.0.0.5"]}))
    assert await guard.resolve("lan", 443) == ["127.0.0.5"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/files/data.zip",
        "https://[::1]:{port}/files/data.zip",
        "https://[::ffff:127.0.0.1]:{port}/files/data.zip",
        "https://evil.example.com:{port}/files/data.zip",  # resolves to 127.0.0.1
    ],
)
async def test_fetch_refuses_private_targets_before_connecting(https_world: HttpsWorld, url: str) -> None:
    with pytest.raises(FetchError) as caught:
        await https_world.fetch(url.format(port=https_world.port), guard=https_world.guard(allow=()))
    assert caught.value.code == "blocked_address"
    assert https_world.log.requests == [], "nothing may reach the server"


async def test_a_public_link_that_redirects_to_loopback_is_refused(https_world: HttpsWorld) -> None:
    guard = https_world.guard(allow=())  # public.example.net "resolves" to 93.184.216.34, which passes
    with pytest.raises(FetchError) as caught:
        await https_world.fetch(https_world.url("public.example.net", "/to-loopback"), guard=guard)
    assert caught.value.code == "blocked_address"
    assert str(caught.value).startswith("Refused (after a redirect): the link points at 127.0.0.1, a loopback")
    assert [(host, path) for host, path, _ in https_world.log.requests] == [("public.example.net", "/to-loopback")]
    assert not (https_world.tmp / "dl").exists() or not any((https_world.tmp / "dl").iterdir())


async def test_a_legacy_numeric_ipv4_form_is_not_a_way_around(https_world: HttpsWorld) -> None:
    with pytest.raises(FetchError) as caught:
        await https_world.fetch(
            f"https://2130706433:{https_world.port}/files/data.zip", guard=https_world.guard(allow=())
        )
    assert caught.value.code in ("blocked_address", "bad_link")
    assert https_world.log.requests == []
