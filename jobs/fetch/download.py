"""Download a dataset link to disk: guarded, capped, streamed, with one clear message per way it can fail.

Redirects are followed by hand (at most `max_redirects`) so every hop passes the scheme check and the SSRF guard,
and a Hugging Face token is only ever sent to the host the user named. The body goes to a hidden temp file in
`dest`'s folder that is renamed into place when complete; any failure removes it.

Each hop is parsed once, by yarl, and that very URL object is what aiohttp requests: the guard judges the host
aiohttp dials, not a second parser's idea of it. The socket factory re-checks the address right before connect.
A whole download has a deadline and a minimum average rate, so a server trickling bytes cannot hold it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import inspect
import os
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from jobs.errors import UserFacingError
from jobs.fetch.guard import GuardRefused, SsrfGuard, parse_host
from jobs.fetch.links import DRIVE_HOSTS, LinkError, LinkKind, direct_link, drive_confirmation_url
from jobs.usertext import shown

CHUNK_BYTES = 256 * 1024
MAX_HTML_BYTES = 512 * 1024
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml")


@dataclass(frozen=True)
class FetchTimeouts:
    connect_s: float = 10.0
    read_s: float = 30.0  # longest silence while waiting for headers or the next bytes
    progress_interval_s: float = 3.0
    total_s: float = 3600.0  # the whole download, redirects included
    # Average body rate below which a download is stopped; judged once `read_s` seconds of body have passed, so a
    # slow first second does not count. 0 turns the check off.
    min_bytes_per_s: float = 50_000.0


@dataclass(frozen=True)
class FetchProgress:
    bytes_done: int
    bytes_total: int | None
    bytes_per_s: float
    eta_s: float | None


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    kind: LinkKind
    source: str  # host and path of the final hop, without the query (it may carry signatures)
    redirects: int


@dataclass(frozen=True)
class FetchTransport:
    """How connections are made. Production uses the defaults; tests trust a local CA and may send a checked
    address to a local server (`dial_overrides`: checked IP -> IP actually dialled), so the guard can approve a
    public-looking address while no packet leaves the machine."""

    ssl_context: ssl.SSLContext | None = None
    dial_overrides: Mapping[str, str] = field(default_factory=dict)


class FetchError(UserFacingError):
    """A refused or failed download: `code` is a stable slug, str() a message for the user (no secrets)."""


ProgressCallback = Callable[[FetchProgress], Awaitable[None] | None]


async def fetch_dataset(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    guard: SsrfGuard,
    timeouts: FetchTimeouts = FetchTimeouts(),
    progress_cb: ProgressCallback | None = None,
    hf_token: str | None = None,
    allow_http: bool = False,
    max_redirects: int = 5,
    transport: FetchTransport = FetchTransport(),
) -> FetchResult:
    """Download the zip behind `url` (share links are rewritten) to `dest`, or raise FetchError leaving nothing."""
    try:
        link = direct_link(url, hf_token=hf_token)
    except LinkError as exc:
        raise FetchError("bad_link", f"The dataset link is not usable: {exc}.") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    partial = Path(partial_name)
    dialer = _Dialer()
    seen = _Seen()
    try:
        with os.fdopen(fd, "wb") as out:
            async with _session(guard, timeouts, transport, dialer) as session:
                try:
                    async with asyncio.timeout(timeouts.total_s) as deadline:
                        size, digest, source, redirects = await _follow(
                            session,
                            link.url,
                            link.kind,
                            link.headers,
                            out,
                            guard,
                            timeouts,
                            progress_cb,
                            dialer,
                            seen,
                            max_bytes=max_bytes,
                            allow_http=allow_http,
                            max_redirects=max_redirects,
                        )
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise _deadline_error(seen, timeouts) from None
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return FetchResult(dest, size, digest, link.kind, source, redirects)


@dataclass
class _Seen:
    """What the download has reached so far, for the message when the deadline cuts it off."""

    where: str = "?"
    bytes_done: int = 0


class _Dialer:
    """aiohttp's socket factory, called with the exact address a socket is about to connect to: the last line.

    Only addresses the guard approved during this download are dialled (resolver answers and checked literals).
    Should aiohttp ever skip the resolver for a host form `_follow` did not check, the connect fails here.
    """

    def __init__(self) -> None:
        self.approved: set[str] = set()
        self.refused: str | None = None

    def __call__(self, addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if address not in self.approved:
            self.refused = address
            raise OSError(errno.EACCES, "address not approved by the SSRF guard")
        return socket.socket(family, type_, proto)


@contextlib.asynccontextmanager
async def _session(
    guard: SsrfGuard, timeouts: FetchTimeouts, transport: FetchTransport, dialer: _Dialer
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(guard, transport.dial_overrides, dialer),
        socket_factory=dialer,
        use_dns_cache=False,  # every hop is resolved (and checked) anew
        # A fresh default context (not aiohttp's import-time one) honours SSL_CERT_FILE set by the operator.
        ssl=transport.ssl_context or ssl.create_default_context(),
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s)
    # trust_env=False: an HTTP(S)_PROXY from the environment would make the proxy, not us, pick the address.
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False, auto_decompress=False
    ) as session:
        yield session


class _PinnedResolver(AbstractResolver):
    """aiohttp asks this for a host's addresses; it answers only with addresses the guard approved."""

    def __init__(self, guard: SsrfGuard, dial_overrides: Mapping[str, str], dialer: _Dialer) -> None:
        self._guard = guard
        self._dial = dial_overrides
        self._dialer = dialer

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await self._guard.resolve(host, port):
            dialled = self._dial.get(address, address)
            self._dialer.approved.add(dialled)
            results.append(
                {
                    "hostname": host,
                    "host": dialled,
                    "port": port,
                    "family": socket.AF_INET6 if ":" in dialled else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    kind: LinkKind,
    headers: Mapping[str, str],
    out: BinaryIO,
    guard: SsrfGuard,
    timeouts: FetchTimeouts,
    progress_cb: ProgressCallback | None,
    dialer: _Dialer,
    seen: _Seen,
    *,
    max_bytes: int,
    allow_http: bool,
    max_redirects: int,
) -> tuple[int, str, str, int]:
    try:
        target = URL(url)
    except ValueError:
        raise FetchError("bad_link", "The dataset link is not a valid web address.") from None
    origin_host = target.raw_host
    redirects = 0
    confirmed = False
    while True:
        where = _where(target)
        seen.where = where
        hop = "redirects to" if redirects else "is"
        _check_scheme(target, hop, where, allow_http)
        if target.raw_user is not None or target.raw_password is not None:
            # aiohttp would turn them into an Authorization header for whatever host this is.
            raise FetchError("bad_link", f"The link {hop} an address with a user name or password ({where}).")
        host = target.raw_host or ""
        try:
            # IP literals never reach the resolver (aiohttp dials them directly): check them here, on the very
            # string aiohttp dials. Names are checked by the pinned resolver when aiohttp asks for them.
            if not isinstance(parse_host(host), str):
                await guard.resolve(host, target.port or 443)
                dialer.approved.add(host)
            hop_headers = {"Accept-Encoding": "identity", **(headers if host == origin_host else {})}
            response = await session.get(target, headers=hop_headers, allow_redirects=False)
        except GuardRefused as exc:
            raise _blocked(str(exc), redirects) from None
        except aiohttp.InvalidURL:
            raise FetchError("bad_link", f"The link {where} is not a valid web address.") from None
        except aiohttp.ClientError as exc:
            if dialer.refused is not None:
                raise _blocked(f"{shown(dialer.refused)} was not approved by the address check", redirects) from None
            raise _connection_error(exc, where, timeouts) from None
        except TimeoutError:
            raise FetchError(
                "connect_timeout", f"{where} did not accept a connection within {timeouts.connect_s:g} s."
            ) from None
        async with response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError("bad_redirect", f"{where} answered a redirect without saying where to.")
                redirects += 1
                if redirects > max_redirects:
                    raise FetchError(
                        "too_many_redirects",
                        f"The link redirected more than {max_redirects} times; give the final address.",
                    )
                try:
                    target = target.join(URL(location))  # as aiohttp itself joins a Location
                except ValueError:
                    raise FetchError(
                        "bad_redirect", f"{where} redirected to {shown(location)}, which is not a web address."
                    ) from None
                continue
            _refuse_status(response.status, response.reason or "", where, kind)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type == "text/html" and host in DRIVE_HOSTS and not confirmed:
                page = await _read_text(response, timeouts, where)
                next_url = drive_confirmation_url(str(target), page)
                if next_url is None:
                    raise FetchError(
                        "drive_page",
                        "Google Drive answered with a web page, not the file: share the file with "
                        "'Anyone with the link' and send that link.",
                    )
                confirmed = True
                try:
                    target = URL(next_url)
                except ValueError:
                    raise FetchError("drive_page", "Google Drive's download page links to no valid address.") from None
                continue
            if content_type == "text/html":
                raise _html_error(where)
            if response.content_length is not None and response.content_length > max_bytes:
                raise FetchError(
                    "too_large",
                    f"The file is {_mb(response.content_length)}; the limit is "
                    f"{_mb(max_bytes)}. Nothing was downloaded.",
                )
            size, digest = await _stream(response, out, where, max_bytes, timeouts, progress_cb, seen)
            return size, digest, where, redirects


def _check_scheme(target: URL, hop: str, where: str, allow_http: bool) -> None:
    scheme = target.scheme
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise FetchError("insecure_link", f"The link {hop} plain http ({where}); lorabot only downloads over https.")
    # file:, gopher:, ftp:, data:... named as they are (shortened, escaped): calling them "http" would mislead.
    raise FetchError(
        "insecure_link",
        f"The link {hop} a {shown(scheme, 20)} address, not a web address; lorabot only downloads over https.",
    )


def _blocked(reason: str, redirects: int) -> FetchError:
    via = " (after a redirect)" if redirects else ""
    return FetchError("blocked_address", f"Refused{via}: {reason}.")


def _refuse_status(status: int, reason: str, where: str, kind: LinkKind) -> None:
    if status < 400 and status != 204:
        if 200 <= status < 300:
            return
        raise FetchError("http_error", f"{where} answered {status} {reason}; expected the file.")
    if status == 404:
        raise FetchError("not_found", f"Nothing at {where} (404 Not Found): check the link is complete and public.")
    if status in (401, 403):
        hint = (
            " For a private Hugging Face repository the operator must set a token (HF_TOKEN)."
            if kind == "huggingface"
            else " Make the file public (anyone with the link) and try again."
        )
        raise FetchError("forbidden", f"{where} refused access ({status} {reason}).{hint}")
    if status == 204:
        raise FetchError("empty", f"{where} answered with no content (204).")
    if status == 429:
        raise FetchError("rate_limited", f"{where} is rate-limiting downloads (429); try again in a few minutes.")
    if status >= 500:
        raise FetchError("server_error", f"{where} had a server error ({status} {reason}); try again later.")
    raise FetchError("http_error", f"{where} answered {status} {reason}.")


def _html_error(where: str) -> FetchError:
    return FetchError(
        "html_page",
        f"{where} is a web page, not a zip file. Open it in a browser and copy the "
        "address of the download button (the direct file link) instead.",
    )


async def _read_text(response: aiohttp.ClientResponse, timeouts: FetchTimeouts, where: str) -> str:
    buffer = bytearray()
    try:
        async for chunk in response.content.iter_chunked(64 * 1024):
            buffer += chunk
            if len(buffer) > MAX_HTML_BYTES:
                break
    except aiohttp.ClientError as exc:
        raise _connection_error(exc, where, timeouts) from None
    return buffer.decode(response.charset or "utf-8", "replace")


async def _stream(
    response: aiohttp.ClientResponse,
    out: BinaryIO,
    where: str,
    max_bytes: int,
    timeouts: FetchTimeouts,
    progress_cb: ProgressCallback | None,
    seen: _Seen,
) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = response.content_length
    done = 0
    head = b""
    started = last_report = time.monotonic()
    try:
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            done += len(chunk)
            if done > max_bytes:
                raise FetchError(
                    "too_large",
                    f"The download passed the limit of {_mb(max_bytes)} and was "
                    "stopped (the server did not say the size up front).",
                )
            if len(head) < 16:
                head += chunk[: 16 - len(head)]
                if len(head) >= 16:
                    _check_head(head, where)
            digest.update(chunk)
            out.write(chunk)
            seen.bytes_done = done
            now = time.monotonic()
            _check_rate(done, now - started, where, timeouts)
            if progress_cb is not None and now - last_report >= timeouts.progress_interval_s:
                last_report = now
                await _report(progress_cb, done, total, now - started)
    except aiohttp.ClientPayloadError:
        raise FetchError(
            "truncated",
            f"The download from {where} broke off after {_mb(done)}"
            + (f" of {_mb(total)}" if total else "")
            + "; try again.",
        ) from None
    except aiohttp.ClientError as exc:
        raise _connection_error(exc, where, timeouts, done) from None
    except TimeoutError:
        raise _read_timeout(where, timeouts, done) from None
    if done == 0:
        raise FetchError("empty", f"{where} sent an empty file.")
    if len(head) < 16:
        _check_head(head, where)
    if total is not None and done != total:
        raise FetchError("truncated", f"The download from {where} broke off after {_mb(done)} of {_mb(total)}.")
    return done, digest.hexdigest()


def _check_rate(done: int, elapsed: float, where: str, timeouts: FetchTimeouts) -> None:
    """Stop a body that arrives, on average, slower than the operator's minimum (a trickle inside the read timeout)."""
    if timeouts.min_bytes_per_s <= 0 or elapsed < timeouts.read_s:
        return
    rate = done / elapsed
    if rate < timeouts.min_bytes_per_s:
        raise FetchError(
            "too_slow",
            f"The download from {where} was stopped: it arrived at {_rate(rate)} on average ({_mb(done)} in "
            f"{elapsed:.0f} s), below the minimum of {_rate(timeouts.min_bytes_per_s)}. Put the zip on a faster "
            "host (Hugging Face, Google Drive, Dropbox) and try again.",
        )


def _deadline_error(seen: _Seen, timeouts: FetchTimeouts) -> FetchError:
    return FetchError(
        "too_slow",
        f"The download from {seen.where} was stopped: it did not finish within {_duration(timeouts.total_s)} "
        f"(the limit for one download; {_mb(seen.bytes_done)} had arrived). Put the zip on a faster host "
        "(Hugging Face, Google Drive, Dropbox) and try again.",
    )


def _rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1000:.1f} kB/s" if bytes_per_s < 1_000_000 else f"{bytes_per_s / 1_000_000:.1f} MB/s"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    return f"{seconds / 60:.0f} min"


def _check_head(head: bytes, where: str) -> None:
    if head.startswith(ZIP_MAGICS):
        return
    if head.lstrip().lower().startswith(_HTML_STARTS):
        raise _html_error(where)
    raise FetchError("not_zip", f"The file at {where} is not a zip archive (it does not start like one).")


async def _report(progress_cb: ProgressCallback, done: int, total: int | None, elapsed: float) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if total is not None and rate > 0 else None
    result = progress_cb(FetchProgress(done, total, rate, eta))
    if inspect.isawaitable(result):
        await result


def _connection_error(exc: aiohttp.ClientError, where: str, timeouts: FetchTimeouts, done: int = 0) -> FetchError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return FetchError("connect_timeout", f"{where} did not accept a connection within {timeouts.connect_s:g} s.")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return _read_timeout(where, timeouts, done)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return FetchError("tls_error", f"{where} has an invalid HTTPS certificate; lorabot will not download from it.")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FetchError("connect_failed", f"Could not connect to {where} (the server is down or unreachable).")
    return FetchError("connection_lost", f"The connection to {where} failed after {_mb(done)}; try again.")


def _read_timeout(where: str, timeouts: FetchTimeouts, done: int) -> FetchError:
    return FetchError(
        "timeout",
        f"{where} stopped sending for {timeouts.read_s:g} s (after {_mb(done)}); "
        "the server is too slow or stuck. Try again later or use another host.",
    )


def _where(target: URL) -> str:
    """Host, explicit port and path of a hop, for messages: never the query (it may carry signatures)."""
    host = target.raw_host or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{target.explicit_port}" if target.explicit_port else ""
    path = target.raw_path if len(target.raw_path) <= 60 else target.raw_path[:57] + "..."
    # Escapes (not quotes): the message reads "files.example.com/x.zip", yet no control character or markdown
    # from a hostile Location header gets through.
    return shown(f"{host}{port}{path}", 120)[1:-1]


def _mb(size: int | None) -> str:
    if size is None:
        return "an unknown size"
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size} bytes"
