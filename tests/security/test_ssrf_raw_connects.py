"""The SSRF guard against every host form we could think of, counted in raw TCP connects, with the allow-list empty.

A listener on 127.0.0.1 and ::1 (same port) counts accepted connections, so a https attempt whose TLS handshake
fails before any HTTP request is still seen. Each hostile form is given directly and as the Location of a redirect
from a public-looking host; every one must end in a specific refusal, zero connects and nothing on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp import web

from jobs.fetch import FetchError, FetchTimeouts, FetchTransport, SsrfGuard, StaticResolver, fetch_dataset

PUBLIC_LOOKING_IP = "93.184.216.34"  # what redirect.example.net "resolves" to; dialled to the local redirector

# Every form names the loopback listener's port as {port}. Grouped by class; several inputs per class.
ZONE_IDS = [
    "[::1%251]",
    "[::1%25lo]",
    "[::1%25eth0]",
    "[::1%1]",  # a raw % (not %25) that yarl keeps
    "[::ffff:127.0.0.1%251]",
    "[::FFFF:7F00:1%251]",
    "[0:0:0:0:0:0:0:1%251]",
    "[fe80::1%251]",
    "[::1%25%32%35]",
]
IPV6_EMBEDDINGS = [
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::FFFF:7F00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[::7f00:2]",
    "[64:ff9b::127.0.0.1]",  # NAT64
    "[64:ff9b:1::7f00:1]",  # local-use NAT64
    "[2002:7f00:1::1]",  # 6to4
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo whose client is 127.0.0.1
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:0:7f00:1]",  # IPv4-translated
    "[fec0::1]",  # site-local (deprecated)
    "[fec0::7f00:1]",
    "[3fff::1]",  # documentation
    "[::]",
]
IPV4_FORMS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "017700000001",
    "127.1",
    "127.0.1",
    "127.0.0.1.",
    "127.0.0.1..",
    "0",
    "0.0.0.0",
    "１２７.０.０.１",  # fullwidth digits: yarl folds them to 127.0.0.1
    "127。0。0。1",  # ideographic full stops
    "%31%32%37.0.0.1",
    "127.0.0.01",
    "public.0x7f",
    "localhost.127",
]
NAMES_AND_USERINFO = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "ｌｏｃａｌｈｏｓｔ",
    "evil.example.com",  # resolves to 127.0.0.1
    "evil@127.0.0.1",
    "user:pass@[::1]",
    "redirect.example.net@127.0.0.1",
    "127.0.0.1#@redirect.example.net",
    "a..b",
    "-evil.example.com",
    "evil_example%2ecom",
]
FORMS = ZONE_IDS + IPV6_EMBEDDINGS + IPV4_FORMS + NAMES_AND_USERINFO


@dataclass
class ConnectCounter:
    port: int = 0
    accepted: int = 0
    servers: list[asyncio.Server] = field(default_factory=list)

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


@pytest_asyncio.fixture
async def counter() -> AsyncIterator[ConnectCounter]:
    """Raw TCP listeners on 127.0.0.1 and ::1 (the same port), counting every accepted connection."""
    found = ConnectCounter()
    for _ in range(20):
        v4 = await asyncio.start_server(found._accept, "127.0.0.1", 0)
        port = v4.sockets[0].getsockname()[1]
        try:
            v6 = await asyncio.start_server(found._accept, "::1", port)
        except OSError:
            v4.close()
            continue
        found.port, found.servers = port, [v4, v6]
        break
    else:
        pytest.skip("no port free on both 127.0.0.1 and ::1")
    yield found
    for server in found.servers:
        server.close()


@pytest_asyncio.fixture
async def redirector() -> AsyncIterator[int]:
    """A plain-http server (reached as redirect.example.net) answering /go?to=X with a 302 to X, verbatim."""

    async def go(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query["to"]})

    app = web.Application()
    app.router.add_get("/go", go)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


def empty_allow_list_guard() -> SsrfGuard:
    table = {"evil.example.com": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"]}
    table["redirect.example.net"] = [PUBLIC_LOOKING_IP]
    guard = SsrfGuard(allow=(), resolver=StaticResolver(table))
    assert guard.allow == ()
    return guard


async def fetch(url: str, dest: Path) -> None:
    await fetch_dataset(
        url,
        dest,
        max_bytes=1_000_000,
        guard=empty_allow_list_guard(),
        timeouts=FetchTimeouts(connect_s=2, read_s=2, progress_interval_s=0),
        allow_http=True,
        transport=FetchTransport(dial_overrides={PUBLIC_LOOKING_IP: "127.0.0.1"}),
    )


async def refused(url: str, tmp_path: Path) -> FetchError:
    dest = tmp_path / "dl" / "dataset.zip"
    with pytest.raises(FetchError) as caught:
        await fetch(url, dest)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == [], "a refusal must leave nothing on disk"
    return caught.value


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("form", FORMS)
async def test_a_hostile_host_form_given_directly_never_connects(
    counter: ConnectCounter, tmp_path: Path, form: str, scheme: str
) -> None:
    url = f"{scheme}://{form}:{counter.port}/x.zip"
    error = await refused(url, tmp_path)
    assert error.code in ("blocked_address", "bad_link"), str(error)
    assert "Traceback" not in str(error)
    assert counter.accepted == 0, f"{url} reached the listener"


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("form", FORMS)
async def test_a_hostile_host_form_as_a_redirect_target_never_connects(
    counter: ConnectCounter, redirector: int, tmp_path: Path, form: str, scheme: str
) -> None:
    target = f"{scheme}://{form}:{counter.port}/x.zip"
    error = await refused(f"http://redirect.example.net:{redirector}/go?to={quote(target, safe='')}", tmp_path)
    assert error.code in ("blocked_address", "bad_link", "bad_redirect"), str(error)
    if error.code == "blocked_address":
        assert str(error).startswith("Refused (after a redirect): "), str(error)
    assert counter.accepted == 0, f"the redirect to {target} reached the listener"


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ("[::1%251]", "zone id"),
        ("[::ffff:127.0.0.1%251]", "zone id"),
        ("2130706433", "nonstandard form"),
        ("0x7f.1", "nonstandard form"),
        ("127.0.0.1.", "nonstandard form"),
        ("[::ffff:127.0.0.1]", "an IPv6 form of 127.0.0.1, a loopback address"),
        ("[fec0::1]", "site-local"),
        ("１２７.０.０.１", "127.0.0.1, a loopback address"),
        ("a..b", "neither a plain domain name nor an IP address"),
    ],
)
async def test_each_refusal_says_what_was_wrong_with_the_host(
    counter: ConnectCounter, tmp_path: Path, form: str, says: str
) -> None:
    error = await refused(f"https://{form}:{counter.port}/x.zip", tmp_path)
    assert error.code == "blocked_address"
    assert says in str(error)
    assert counter.accepted == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_the_listener_does_count_a_connect_that_the_allow_list_permits(
    counter: ConnectCounter, tmp_path: Path, scheme: str
) -> None:
    """The control: the same listener sees a permitted connect, TLS or not, so the zeros above mean something."""
    with pytest.raises(FetchError):
        await fetch_dataset(
            f"{scheme}://127.0.0.1:{counter.port}/x.zip",
            tmp_path / "dl" / "dataset.zip",
            max_bytes=1_000_000,
            guard=SsrfGuard(allow=["127.0.0.1/32"]),
            timeouts=FetchTimeouts(connect_s=2, read_s=2, progress_interval_s=0),
            allow_http=True,
        )
    assert counter.accepted >= 1


@pytest.mark.parametrize("form", ["[::1%251]", "[::ffff:127.0.0.1%251]", "１２７.０.０.１", "[::ffff:127.0.0.1]"])
async def test_without_the_guard_these_forms_do_reach_loopback(counter: ConnectCounter, form: str) -> None:
    """Why the forms matter: a plain aiohttp client dials them without asking any resolver."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with contextlib.suppress(aiohttp.ClientError):
            await session.get(f"http://{form}:{counter.port}/x.zip")
    assert counter.accepted >= 1


@pytest.mark.parametrize(
    ("location", "scheme_shown"),
    [
        ("file:///etc/passwd", "'file'"),
        ("gopher://127.0.0.1:70/_x", "'gopher'"),
        ("ftp://files.example.com/x.zip", "'ftp'"),
        ("data:application/zip;base64,UEsDBA==", "'data'"),
        ("javascript:alert(1)", "'javascript'"),
        ("dict://127.0.0.1:11211/stat", "'dict'"),
        ("ldap://127.0.0.1/x", "'ldap'"),
        ("ws://127.0.0.1/x", "'ws'"),
        ("x" * 300 + "://127.0.0.1/x", "'" + "x" * 13 + "…" + "x" * 6 + "'"),
    ],
)
async def test_a_redirect_to_another_scheme_names_that_scheme(
    counter: ConnectCounter, redirector: int, tmp_path: Path, location: str, scheme_shown: str
) -> None:
    error = await refused(f"http://redirect.example.net:{redirector}/go?to={quote(location, safe='')}", tmp_path)
    assert error.code == "insecure_link"
    assert str(error) == (
        f"The link redirects to a {scheme_shown} address, not a web address; lorabot only downloads over https."
    )
    assert "plain http" not in str(error)
    assert counter.accepted == 0


def test_ipv6_loopback_is_available_for_these_tests() -> None:
    """The zone-id forms only mean something where ::1 exists; say so rather than pass vacuously."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("form", ["[::1]", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_the_socket_factory_refuses_an_address_the_guard_never_approved(
    counter: ConnectCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, scheme: str
) -> None:
    """The last line: were the literal check ever skipped, the connect itself is refused, not made."""
    import jobs.fetch.download as download

    monkeypatch.setattr(download, "parse_host", lambda host: host)  # pretend every host is a name
    error = await refused(f"{scheme}://{form}:{counter.port}/x.zip", tmp_path)
    assert error.code == "blocked_address"
    assert "was not approved by the address check" in str(error)
    assert counter.accepted == 0


@pytest.mark.parametrize(
    "host",
    ["files.example.com", "files.example.com.", "0x7f.com", "a-b.c_d.example", "xn--bcher-kva.example", "v1.fe"],
)
def test_a_host_the_guard_takes_for_a_name_is_one_aiohttp_sends_to_the_resolver(host: str) -> None:
    """Names go to the pinned resolver only if aiohttp's own literal test says "not an IP" for them too."""
    from aiohttp.helpers import is_ip_address

    from jobs.fetch.guard import parse_host

    assert isinstance(parse_host(host), str)
    assert not is_ip_address(host)
