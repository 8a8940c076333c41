"""SSRF guard: a dataset link may only reach public internet addresses.

The guard resolves a host name itself and hands the checked addresses to the connection (see
`download._PinnedResolver`), so no second DNS answer can slip in between the check and the connect. Every address
a name resolves to must pass, otherwise one poisoned record among good ones would be tried by happy-eyeballs.

The host is judged in the form aiohttp connects to (yarl's `URL.raw_host`: lower case, IDNA-encoded, NFKC-folded,
IPv6 without brackets). aiohttp treats a host with a colon, or made only of digits and dots, as an IP literal and
dials it without asking any resolver, so `parse_host` accepts exactly two forms, a canonical IP literal or a plain
DNS name, and refuses every other form (zone ids, octal/hex/short IPv4, percent escapes) instead of guessing what
some layer below would make of it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from jobs.usertext import shown

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services answer with cloud credentials; some sit on addresses `is_global` calls public.
CLOUD_METADATA: Mapping[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "AWS/GCP/Azure/OpenStack metadata",
    ipaddress.ip_address("169.254.170.2"): "AWS ECS task metadata",
    ipaddress.ip_address("fd00:ec2::254"): "AWS IPv6 metadata",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud metadata",
    ipaddress.ip_address("168.63.129.16"): "Azure wire server",
    ipaddress.ip_address("192.0.0.192"): "Oracle Cloud metadata",
}
# IPv6 forms that carry an IPv4 address a gateway may reach for us.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPAT = ipaddress.ip_network("::/96")
# Embeddings whose meaning is "this IPv4 address": decided by the IPv4 address alone.
_TRANSLATED = (
    ipaddress.ip_network("::ffff:0:0/96"),
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("2002::/16"),
)
# Special-purpose ranges (IANA registries) that Python's `is_global`/`is_private` let through in some versions, or
# that no dataset host lives in. Checked after the embedded-IPv4 forms, so ::ffff:127.0.0.1 still says "127.0.0.1".
SPECIAL_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "an IETF protocol assignment address (192.0.0.0/24)"),
    (ipaddress.ip_network("192.88.99.0/24"), "the deprecated 6to4 relay anycast range"),
    (ipaddress.ip_network("fec0::/10"), "a deprecated IPv6 site-local address (fec0::/10)"),
    (ipaddress.ip_network("3fff::/20"), "an IPv6 documentation address (3fff::/20)"),
    (ipaddress.ip_network("2001:db8::/32"), "an IPv6 documentation address (2001:db8::/32)"),
    (ipaddress.ip_network("2001::/23"), "an IETF protocol assignment address (2001::/23, Teredo included)"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a local-use NAT64 address (64:ff9b:1::/48)"),
    (ipaddress.ip_network("100::/64"), "the IPv6 discard range (100::/64)"),
    (ipaddress.ip_network("5f00::/16"), "an IPv6 segment-routing address (5f00::/16)"),
)
# A DNS label as yarl hands it over (lower case, IDNA already applied). `_` occurs in real host names (CDNs).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A label inet_aton or the WHATWG URL parser would read as (part of) an IPv4 address: 127, 0177, 0x7f, 0x.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class GuardRefused(Exception):
    """The link points at an address lorabot must not reach; str() is safe to show the user.

    Not an OSError on purpose: aiohttp wraps OSErrors from a resolver into a generic DNS error.
    """


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise GuardRefused(f"the host name {host!r} does not resolve (check the link for typos)") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class StaticResolver:
    """A hosts-file in a dict: name -> addresses. Names it lacks go to `fallback` (or are unknown)."""

    def __init__(self, table: Mapping[str, Sequence[str]], fallback: Resolver | None = None) -> None:
        self._table = {name.lower(): list(addrs) for name, addrs in table.items()}
        self._fallback = fallback

    async def resolve(self, host: str, port: int) -> list[str]:
        found = self._table.get(host.lower().rstrip("."))
        if found is not None:
            return list(found)
        if self._fallback is not None:
            return await self._fallback.resolve(host, port)
        raise GuardRefused(f"the host name {host!r} does not resolve (check the link for typos)")


def parse_host(host: str) -> IPAddress | str:
    """The canonical IP literal, or the DNS name, that `host` (a URL's raw host, as aiohttp dials it) is.

    Raises GuardRefused for any other form: those are exactly the ones where the guard and the layers below
    (aiohttp's literal test, getaddrinfo's inet_aton, the kernel's zone ids) could disagree on the address.
    """
    if not host:
        raise GuardRefused("the link names no host")
    if ":" in host:  # aiohttp dials any host with a colon as an IPv6 literal
        if "%" in host:
            raise GuardRefused(
                f"the link's address {shown(host)} carries an IPv6 zone id (the part after %), which picks a "
                "network interface of the bot's machine; lorabot refuses such addresses"
            )
        try:
            return ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise GuardRefused(f"the link's host {shown(host)} is not an IP address lorabot can check") from None
    labels = host.lower().split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # one trailing dot: a fully qualified name
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # aiohttp dials digits-and-dots directly; getaddrinfo reads 0x7f.1 or 127.1 as 127.0.0.1. Only the plain
        # a.b.c.d form means the same to everyone.
        if _canonical_ipv4(host):
            return ipaddress.IPv4Address(host)
        raise GuardRefused(
            f"the link's host {shown(host)} is an IP address in a nonstandard form (octal, hex, shortened, a plain "
            "number or a trailing dot); lorabot only accepts the a.b.c.d form"
        )
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise GuardRefused(
            f"the link's host {shown(host)} is neither a plain domain name nor an IP address lorabot can check"
        )
    return host.lower()


def _canonical_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(
        part.isascii()
        and part.isdigit()
        and len(part) <= 3
        and (part == "0" or not part.startswith("0"))
        and int(part) <= 255
        for part in parts
    )


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` must not be reached, or None when it is a public unicast address."""
    if address in CLOUD_METADATA:
        return f"a cloud metadata address ({CLOUD_METADATA[address]})"
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return "an IPv6 address with a zone id"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner:
                return f"an IPv6 form of {embedded}, {inner}"
            if any(address in net for net in _TRANSLATED):
                return None  # a translation of a public IPv4 address (mapped, NAT64, 6to4) is that address
            if address in _IPV4_COMPAT:
                return "a deprecated IPv4-compatible IPv6 address (::a.b.c.d)"
    for network, label in SPECIAL_RANGES:
        if address.version == network.version and address in network:
            return label
    for test, label in (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address (this machine)"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private network address"),
    ):
        if test:
            return label
    # Catches the rest that is not the public internet: shared CGNAT space, documentation ranges, 6to4 relays...
    if not address.is_global:
        return "not a public internet address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server half is public by design
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPAT and int(address) > 1:  # ::a.b.c.d (deprecated); :: and ::1 are handled above
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class SsrfGuard:
    """Resolve-and-check for every host a download touches. `allow` lists networks let through anyway."""

    def __init__(self, allow: Iterable[str | IPNetwork] = (), resolver: Resolver | None = None) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(
            net if not isinstance(net, str) else ipaddress.ip_network(net, strict=False) for net in allow
        )
        self.resolver: Resolver = resolver or SystemResolver()

    def check_address(self, host: str, address: str) -> IPAddress:
        """Raise GuardRefused unless `address` (an IP literal) may be reached for the link's `host`."""
        try:
            # getaddrinfo may add a zone id to a link-local answer; the address itself is what is judged.
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise GuardRefused(f"{shown(host)} resolved to {shown(address)}, which is not an IP address") from None
        if any(ip in net for net in self.allow):
            return ip
        reason = forbidden_reason(ip)
        if reason is not None:
            target = host if host == str(ip) else f"{host} ({ip})"
            raise GuardRefused(
                f"the link points at {target}, {reason}; lorabot only downloads from the public internet"
            )
        return ip

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host` (a URL's raw host) that the connection may use; all of them passed the check."""
        target = parse_host(host)
        if not isinstance(target, str):
            return [str(self.check_address(str(target), str(target)))]
        name = target.rstrip(".")
        addresses = await self.resolver.resolve(name, port)
        if not addresses:
            raise GuardRefused(f"the host name {shown(name)} does not resolve")
        return [str(self.check_address(name, address)) for address in addresses]
