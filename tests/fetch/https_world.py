"""A local HTTPS server that impersonates the hosts datasets come from (test CA via trustme; no network).

Every name in HOSTS resolves, through the guard's StaticResolver, to 127.0.0.1 where one aiohttp app answers for
all of them (routing on the Host header), with a certificate valid for each name: the client keeps SNI and Host
while the connection goes to the checked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from jobs.fetch import FetchResult, FetchTimeouts, FetchTransport, SsrfGuard, StaticResolver, fetch_dataset

HOSTS = (
    "files.example.com",
    "huggingface.co",
    "drive.google.com",
    "drive.usercontent.google.com",
    "www.dropbox.com",
    "public.example.net",
)
HF_TOKEN = "hf_testtoken_not_a_real_one_123456"
DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz"
PUBLIC_LOOKING_IP = "93.184.216.34"  # what public.example.net "resolves" to; dialled to 127.0.0.1 in tests


def small_zip(files: int = 3, filler: int = 2000) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(files):
            archive.writestr(f"img_{index}.txt", "x" * filler)
    return buffer.getvalue()


@dataclass
class ServerLog:
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # host, path_qs, headers
    body_bytes_sent: dict[str, int] = field(default_factory=dict)


class HttpsWorld:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(*HOSTS, "127.0.0.1", "::1")
        self.zip_bytes = small_zip()
        self.log = ServerLog()
        self.tmp = tmp
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # -- client side ---------------------------------------------------------------------------------------
    def client_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.port}{path}"

    def guard(self, *, allow: tuple[str, ...] = ("127.0.0.1/32",)) -> SsrfGuard:
        table = {host: ["127.0.0.1"] for host in HOSTS if host != "public.example.net"}
        table["public.example.net"] = [PUBLIC_LOOKING_IP]
        table["evil.example.com"] = ["127.0.0.1"]
        return SsrfGuard(allow=allow, resolver=StaticResolver(table))

    def transport(self) -> FetchTransport:
        return FetchTransport(ssl_context=self.client_ssl(), dial_overrides={PUBLIC_LOOKING_IP: "127.0.0.1"})

    async def fetch(
        self,
        url: str,
        *,
        dest: Path | None = None,
        guard: SsrfGuard | None = None,
        max_bytes: int = 10_000_000,
        timeouts: FetchTimeouts | None = None,
        **kwargs: Any,
    ) -> FetchResult:
        return await fetch_dataset(
            url,
            dest or self.tmp / "dl" / "dataset.zip",
            max_bytes=max_bytes,
            guard=guard or self.guard(),
            timeouts=timeouts or FetchTimeouts(connect_s=2, read_s=2, progress_interval_s=0),
            transport=self.transport(),
            **kwargs,
        )

    # -- server side ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0]
        self.log.requests.append((host, request.path_qs, dict(request.headers)))
        path = request.path
        if host == "huggingface.co":
            return self._huggingface(request)
        if host in ("drive.google.com", "drive.usercontent.google.com"):
            return self._drive(request, host)
        if host == "www.dropbox.com":
            if request.query.get("dl") == "1":
                return web.Response(body=self.zip_bytes, content_type="application/zip")
            return web.Response(text="<!DOCTYPE html><html>Dropbox preview</html>", content_type="text/html")
        if path == "/files/data.zip":
            return web.Response(body=self.zip_bytes, content_type="application/zip")
        if path.startswith("/r/"):
            hops = int(path.removeprefix("/r/"))
            target = "/files/data.zip" if hops <= 1 else f"/r/{hops - 1}"
            raise web.HTTPFound(target)
        if path == "/to-loopback":
            raise web.HTTPFound(f"https://127.0.0.1:{self.port}/files/data.zip")
        if path == "/to-http":
            raise web.HTTPFound(f"http://files.example.com:{self.port}/files/data.zip")
        if path == "/big":
            return await self._big_declared(request)
        if path == "/endless":
            return await self._endless(request)
        if path == "/slow":
            return await self._slow(request)
        if path == "/page.html":
            return web.Response(text="<!DOCTYPE html><html><body>Download</body></html>", content_type="text/html")
        if path == "/disguised":
            return web.Response(
                body=b"<!DOCTYPE html>\n<html><body>sign in</body></html>", content_type="application/octet-stream"
            )
        if path == "/truncated":
            return await self._truncated(request)
        raise web.HTTPNotFound(text="no such file")

    def _huggingface(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")  # ['', 'datasets', owner, repo, 'resolve'|'blob', rev, file]
        if "blob" in parts:
            return web.Response(text="<!DOCTYPE html><html>file viewer</html>", content_type="text/html")
        if "resolve" not in parts:
            raise web.HTTPNotFound()
        if "private" in request.path and request.headers.get("Authorization") != f"Bearer {HF_TOKEN}":
            raise web.HTTPUnauthorized(text="Invalid credentials")
        # Like the Hub: the bytes live on a CDN host, reached by a redirect.
        raise web.HTTPFound(self.url("files.example.com", "/files/data.zip"))

    def _drive(self, request: web.Request, host: str) -> web.StreamResponse:
        if host == "drive.google.com" and request.path == "/uc" and request.query.get("id") == DRIVE_ID:
            raise web.HTTPSeeOther(self.url("drive.usercontent.google.com", f"/download?id={DRIVE_ID}&export=download"))
        if host == "drive.usercontent.google.com" and request.path == "/download":
            if request.query.get("confirm") == "t" and request.query.get("uuid") == "u-123":
                return web.Response(body=self.zip_bytes, content_type="application/octet-stream")
            action = self.url("drive.usercontent.google.com", "/download")
            page = (
                "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
                "<p>Google Drive can't scan this file for viruses.</p>"
                f'<form id="download-form" action="{action}" method="get">'
                '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                f'<input type="hidden" name="id" value="{DRIVE_ID}"><input type="hidden" name="export" '
                'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" '
                'value="u-123"></form></body></html>'
            )
            return web.Response(text=page, content_type="text/html")
        raise web.HTTPNotFound()

    async def _big_declared(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/zip"})
        response.content_length = 50_000_000
        await response.prepare(request)
        sent = 0
        try:
            for _ in range(50):
                await asyncio.sleep(0.1)  # the body would take 5 s: a client that reads it would be slow
                await response.write(b"PK\x03\x04" + b"\0" * 999_996)
                sent += 1_000_000
        finally:
            self.log.body_bytes_sent["/big"] = sent
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/zip"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        try:
            await response.write(b"PK\x03\x04")
            for _ in range(2000):
                await response.write(b"\0" * 64 * 1024)
                sent += 64 * 1024
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.log.body_bytes_sent["/endless"] = sent
        return response

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/zip"})
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"PK\x03\x04" + b"\0" * 60_000)
        # Stalls until the test ends (stop() releases it so teardown does not wait).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), 30)
        return response

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/zip"})
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"PK\x03\x04" + b"\0" * 100_000)
        request.transport.close()  # type: ignore[union-attr]
        return response


async def started_world(tmp: Path) -> AsyncIterator[HttpsWorld]:
    world = HttpsWorld(tmp)
    await world.start()
    try:
        yield world
    finally:
        await world.stop()
