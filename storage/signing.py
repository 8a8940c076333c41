"""Signed, expiring URLs for the local artifact store (the bot's aiohttp server stands in for a bucket).

A URL carries `exp` (UTC epoch seconds), `op` (get|put) and `sig` = HMAC-SHA256(secret, "<OP>\\n<key>\\n<exp>").
Because the operation is inside the MAC, a GET link cannot be turned into an upload link (or back) by editing
the query, and a link for one key opens no other key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, urlencode

Clock = Callable[[], datetime]
MIN_SECRET_BYTES = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


class Operation(StrEnum):
    GET = "get"
    PUT = "put"


class SignatureRejected(Exception):
    """The request's signature does not allow it; `str(exc)` is safe to show the caller (no secret in it)."""


class LinkExpired(SignatureRejected):
    def __init__(self) -> None:
        super().__init__("link expired")


class InvalidSignature(SignatureRejected):
    def __init__(self, detail: str = "") -> None:
        super().__init__("invalid signature" + (f": {detail}" if detail else ""))


class WrongOperation(SignatureRejected):
    def __init__(self, signed_for: Operation, method: str) -> None:
        super().__init__(f"this link is signed for {signed_for.value.upper()}, not {method}")


class UrlSigner:
    def __init__(self, secret: bytes, clock: Clock = utc_now) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the URL signing secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return "UrlSigner(secret=<redacted>)"

    def now_s(self) -> int:
        return int(self._clock().timestamp())

    def query(self, op: Operation, key: str, expires_s: int) -> str:
        """The query string (without '?') that authorises `op` on `key` for `expires_s` seconds from now."""
        expires_at = self.now_s() + expires_s
        return urlencode({"exp": expires_at, "op": op.value, "sig": self._mac(op, key, expires_at)})

    def url(self, base_url: str, op: Operation, key: str, expires_s: int) -> str:
        return f"{base_url.rstrip('/')}/artifacts/{quote(key, safe='/')}?{self.query(op, key, expires_s)}"

    def verify(self, method: str, key: str, exp: str | None, op: str | None, sig: str | None) -> Operation:
        """Check a request; raise a SignatureRejected subclass with the reason, else return the signed operation.

        Order matters: the MAC first (a forged `exp` must say "invalid signature", not "expired"), then expiry,
        then whether the HTTP method fits the signed operation.
        """
        if exp is None or op is None or sig is None:
            raise InvalidSignature("the link lacks exp, op or sig")
        try:
            signed_op = Operation(op)
            expires_at = int(exp)
        except ValueError:
            raise InvalidSignature() from None
        expected = self._mac(signed_op, key, expires_at)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise InvalidSignature()
        if self.now_s() >= expires_at:
            raise LinkExpired()
        wanted = Operation.PUT if method.upper() == "PUT" else Operation.GET
        if method.upper() not in ("GET", "HEAD", "PUT") or wanted is not signed_op:
            raise WrongOperation(signed_op, method.upper())
        return signed_op

    def _mac(self, op: Operation, key: str, expires_at: int) -> str:
        message = f"{op.value.upper()}\n{key}\n{expires_at}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
