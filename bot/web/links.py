"""One-time upload links: HMAC-signed (storage.signing), expiring, and single use (a small SQLite table).

A link is `{public_url}/upload?u=<user>&c=<channel>&n=<nonce>&exp=…&op=put&sig=…`; the signature covers
user, channel and nonce (they form the signed key), so none of them can be edited. A link is claimed when an upload
starts and stays used once a dataset came of it; a failed upload releases it so the user can try again.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlencode

from storage.signing import InvalidSignature, LinkExpired, Operation, SignatureRejected, UrlSigner

UPLOAD_PATH = "/upload"


class Refusal(StrEnum):
    TAMPERED = "tampered"
    EXPIRED = "expired"
    USED = "used"


class LinkRefused(Exception):
    """Why an upload link cannot be used; `title` and str() are shown to the user (no secret in them)."""

    def __init__(self, kind: Refusal, title: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.title = title
        self.status = 403 if kind is Refusal.TAMPERED else 410


@dataclass(frozen=True)
class UploadTicket:
    user_id: int
    channel_id: int
    nonce: str
    expires_at: datetime


class UsedLinks:
    """Nonces of upload links that were used, in their own SQLite file (one INSERT decides a race)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS used_upload_links (nonce TEXT PRIMARY KEY, used_at TEXT)")

    def claim(self, nonce: str) -> bool:
        """True when this call took the nonce; False when it was already taken."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO used_upload_links (nonce, used_at) VALUES (?, ?)",
                (nonce, datetime.now(UTC).isoformat()),
            )
            return cursor.rowcount == 1

    def release(self, nonce: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM used_upload_links WHERE nonce = ?", (nonce,))

    def is_used(self, nonce: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM used_upload_links WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class UploadLinks:
    def __init__(self, signer: UrlSigner, used: UsedLinks, *, lifetime_s: int = 30 * 60) -> None:
        self.signer = signer
        self.used = used
        self.lifetime_s = lifetime_s

    def issue(self, public_url: str, user_id: int, channel_id: int) -> str:
        """A fresh one-time link for `user_id`, whose dataset report goes to `channel_id`."""
        nonce = secrets.token_urlsafe(12)
        ids = urlencode({"u": user_id, "c": channel_id, "n": nonce})
        signed = self.signer.query(Operation.PUT, _key(user_id, channel_id, nonce), self.lifetime_s)
        return f"{public_url.rstrip('/')}{UPLOAD_PATH}?{ids}&{signed}"

    def verify(self, query: dict[str, str], *, check_used: bool = True) -> UploadTicket:
        """The ticket the query carries, or LinkRefused saying why not."""
        try:
            user_id, channel_id, nonce = int(query["u"]), int(query["c"]), query["n"]
        except (KeyError, ValueError):
            raise _tampered() from None
        try:
            self.signer.verify(
                "PUT", _key(user_id, channel_id, nonce), query.get("exp"), query.get("op"), query.get("sig")
            )
        except LinkExpired:
            raise LinkRefused(
                Refusal.EXPIRED,
                "This upload link has expired",
                f"Upload links work for {self.lifetime_s // 60} minutes. Run /upload in Discord for a new one.",
            ) from None
        except (InvalidSignature, SignatureRejected):
            raise _tampered() from None
        if check_used and self.used.is_used(nonce):
            raise used_refusal()
        return UploadTicket(user_id, channel_id, nonce, datetime.fromtimestamp(int(query["exp"]), UTC))


def used_refusal() -> LinkRefused:
    return LinkRefused(
        Refusal.USED,
        "This upload link was already used",
        "Each link takes one dataset. Run /upload in Discord for a new link.",
    )


def _tampered() -> LinkRefused:
    return LinkRefused(
        Refusal.TAMPERED,
        "This upload link is not valid",
        "Its signature does not match: it was changed or copied incompletely. Run /upload in Discord for a new link.",
    )


def _key(user_id: int, channel_id: int, nonce: str) -> str:
    return f"upload/{user_id}/{channel_id}/{nonce}"
