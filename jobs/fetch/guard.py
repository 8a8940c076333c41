"""SSRF guard: a dataset link may only reach public internet addresses.

The guard resolves a host name itself and hands the checked addresses to the connection (see
`download._PinnedResolver`), so no second DNS answer can slip in between the check and the connect. Every address
a name resolves to must pass, otherwise one poisoned record among good ones would be tried by happy-eyeballs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

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


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` must not be reached, or None when it is a public unicast address."""
    if address in CLOUD_METADATA:
        return f"a cloud metadata address ({CLOUD_METADATA[address]})"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"an IPv6 form of {embedded}, {inner}" if inner else None
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
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            raise GuardRefused(f"{host!r} resolved to {address!r}, which is not an IP address") from None
        if any(ip in net for net in self.allow):
            return ip
        reason = forbidden_reason(ip)
        if reason is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise GuardRefused(f"the link points at {shown}, {reason}; lorabot only downloads from the public internet")
        return ip

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host` that the connection may use; all of them passed the check."""
        host = host.rstrip(".")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            return [str(self.check_address(host, str(literal)))]
        addresses = await self.resolver.resolve(host, port)
        if not addresses:
            raise GuardRefused(f"the host name {host!r} does not resolve")
        return [str(self.check_address(host, address)) for address in addresses]
