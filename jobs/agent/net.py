"""HTTP for the agent: presigned GET/PUT with retries, and resumable downloads (HTTP Range)."""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .lifecycle import StopFlag

CHUNK = 1 << 20
TIMEOUT_S = 60.0
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpFailure(Exception):
    """A request that failed for good; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Stopped(Exception):
    """A stop (SIGTERM) was requested while waiting to retry."""


def _describe(exc: BaseException) -> HttpFailure:
    if isinstance(exc, HttpFailure):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        return HttpFailure(f"HTTP {exc.code} {exc.reason}", exc.code, exc.code in RETRYABLE_STATUS)
    if isinstance(exc, urllib.error.URLError):
        return HttpFailure(f"connection failed: {exc.reason}", retryable=True)
    if isinstance(exc, http.client.IncompleteRead):
        return HttpFailure("connection closed before the whole body arrived", retryable=True)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HttpFailure("timed out", retryable=True)
    if isinstance(exc, (ConnectionError, http.client.HTTPException, OSError)):
        return HttpFailure(f"connection failed: {exc.__class__.__name__}", retryable=True)
    raise exc


class Http:
    """Requests with bounded retries and exponential back-off that a SIGTERM cuts short."""

    def __init__(self, stop: StopFlag, attempts: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
        self.stop = stop
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def _retry(self, action: Callable[[], bytes | None], attempts: int | None = None) -> bytes | None:
        tries = attempts or self.attempts
        delay = self.backoff_s
        for attempt in range(1, tries + 1):
            try:
                return action()
            except Exception as exc:
                failure = _describe(exc)
                if not failure.retryable or attempt == tries:
                    raise failure from None
            if self.stop.sleep(delay):
                raise Stopped()
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def get_bytes(self, url: str, limit: int = 64 << 20) -> bytes:
        def action() -> bytes:
            with urllib.request.urlopen(urllib.request.Request(url), timeout=TIMEOUT_S) as resp:
                body: bytes = resp.read(limit + 1)
            if len(body) > limit:
                raise HttpFailure(f"response larger than {limit} bytes")
            return body

        result = self._retry(action)
        assert result is not None
        return result

    def put_bytes(self, url: str, data: bytes, attempts: int | None = None, timeout: float = TIMEOUT_S) -> None:
        def action() -> None:
            request = urllib.request.Request(url, data=data, method="PUT")
            # moto stores 0 bytes without it (docs/CONTRACTS.md).
            request.add_header("Content-Type", "application/octet-stream")
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()

        self._retry(action, attempts)

    def put_file(self, url: str, path: Path, attempts: int | None = None) -> None:
        size = path.stat().st_size

        def action() -> None:
            with open(path, "rb") as body:
                request = urllib.request.Request(url, data=body, method="PUT")
                request.add_header("Content-Type", "application/octet-stream")
                request.add_header("Content-Length", str(size))
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                    resp.read()

        self._retry(action, attempts)

    def download(
        self,
        url: str,
        part: Path,
        *,
        headers: dict[str, str] | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Download into `part`, resuming from its current size with a Range request; returns the size.

        Each failed attempt keeps what arrived; the attempt budget only counts attempts that made no progress.
        """
        part.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        delay = self.backoff_s
        while True:
            have = part.stat().st_size if part.exists() else 0
            try:
                return self._download_once(url, part, have, headers or {}, on_progress)
            except Exception as exc:
                failure = _describe(exc)
                now_have = part.stat().st_size if part.exists() else 0
                if now_have > have:
                    failures, delay = 0, self.backoff_s
                failures += 1
                if not failure.retryable or failures >= self.attempts:
                    raise failure from None
            if self.stop.sleep(delay):
                raise Stopped()
            delay = min(delay * 2, self.max_backoff_s)

    def _download_once(
        self,
        url: str,
        part: Path,
        have: int,
        headers: dict[str, str],
        on_progress: Callable[[int, int | None], None] | None,
    ) -> int:
        request = urllib.request.Request(url)
        for name, value in headers.items():
            # Unredirected: a token for the model host must not follow a redirect to a CDN.
            request.add_unredirected_header(name, value)
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            resp = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return have  # the part file already holds everything
            raise
        with resp:
            if resp.status == 206:
                match = CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    raise HttpFailure(f"server answered an unexpected range: {resp.headers.get('Content-Range')}")
                total = None if match.group(3) == "*" else int(match.group(3))
                mode = "ab"
            else:
                have = 0  # the server ignored Range: start over
                length = resp.headers.get("Content-Length")
                total = int(length) if length is not None else None
                mode = "wb"
            expected_body = None if total is None else total - have
            received = 0
            with open(part, mode) as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if on_progress:
                        on_progress(have + received, total)
                    if self.stop.requested:
                        raise Stopped()
                out.flush()
                os.fsync(out.fileno())
            if expected_body is not None and received < expected_body:
                raise http.client.IncompleteRead(b"", expected_body - received)
            return have + received
