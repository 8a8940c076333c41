"""One-time caption-editor links: HMAC-signed (storage.signing), expiring, single use, for one dataset of one user.

A link is `{public_url}/captions?u=<user>&d=<sha256>&n=<nonce>&exp=…&op=get&sig=…`; the signature covers user,
dataset and nonce, so none can be edited. Opening the page uses the link up: any other browser opening it again is
refused with its own page. The browser that opened it gets a reopen cookie (HttpOnly, SameSite=Lax, scoped to
the editor's path, named and valued by an HMAC of the link's nonce), so a reload, or a phone browser reloading the
tab, shows the editor again until the link saves or expires. The page talks to the server with a session token
derived from the nonce (HMAC under a key of its own), valid until the link's expiry and only for that page: its
thumbnails and one "save as new dataset".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from bot.web.links import LinkRefused, Refusal, UsedLinks
from storage.signing import InvalidSignature, LinkExpired, Operation, SignatureRejected, UrlSigner

EDITOR_PATH = "/captions"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class EditorTicket:
    user_id: int
    sha256: str
    nonce: str
    expires_at: datetime


class EditorLinks:
    def __init__(self, signer: UrlSigner, used: UsedLinks, session_key: bytes, *, lifetime_s: int = 2 * 3600) -> None:
        self.signer = signer
        self.used = used
        self._session_key = session_key
        self.lifetime_s = lifetime_s

    def issue(self, public_url: str, user_id: int, sha256: str) -> str:
        """A fresh one-time link to edit the captions of dataset `sha256`, which the caller checked is the user's."""
        if not SHA256.match(sha256):
            raise ValueError("a dataset is named by its sha256 (64 lowercase hex digits)")
        nonce = secrets.token_urlsafe(12)
        ids = urlencode({"u": user_id, "d": sha256, "n": nonce})
        signed = self.signer.query(Operation.GET, _key(user_id, sha256, nonce), self.lifetime_s)
        return f"{public_url.rstrip('/')}{EDITOR_PATH}?{ids}&{signed}"

    def verify(self, query: dict[str, str], *, check_used: bool = True) -> EditorTicket:
        """The ticket the query carries, or LinkRefused saying why not (tampered, expired, already opened)."""
        try:
            user_id, sha256, nonce = int(query["u"]), query["d"], query["n"]
        except (KeyError, ValueError):
            raise _tampered() from None
        if not SHA256.match(sha256):
            raise _tampered()
        try:
            self.signer.verify("GET", _key(user_id, sha256, nonce), query.get("exp"), query.get("op"), query.get("sig"))
        except LinkExpired:
            raise LinkRefused(
                Refusal.EXPIRED,
                "This caption editor link has expired",
                f"Editor links work for {self.lifetime_s // 60} minutes. Ask the bot for a new one "
                "(/edit_captions, or the Edit captions button).",
            ) from None
        except (InvalidSignature, SignatureRejected):
            raise _tampered() from None
        if check_used and self.used.is_used(nonce):
            raise used_refusal()
        return EditorTicket(user_id, sha256, nonce, datetime.fromtimestamp(int(query["exp"]), UTC))

    def session_token(self, ticket: EditorTicket) -> str:
        """What the opened page sends back with its requests (never valid for another link)."""
        message = f"caption editor session\n{_key(ticket.user_id, ticket.sha256, ticket.nonce)}".encode()
        return hmac.new(self._session_key, message, hashlib.sha256).hexdigest()

    def check_session(self, ticket: EditorTicket, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.session_token(ticket), token)

    def reopen_cookie(self, ticket: EditorTicket) -> tuple[str, str]:
        """(name, value) of the cookie that lets the browser which opened this link open it again. The name is per
        link, so two editors open in one browser keep their own."""
        key = _key(ticket.user_id, ticket.sha256, ticket.nonce)
        name = hmac.new(self._session_key, f"caption editor reopen name\n{key}".encode(), hashlib.sha256)
        value = hmac.new(self._session_key, f"caption editor reopen\n{key}".encode(), hashlib.sha256)
        return f"lorabot_editor_{name.hexdigest()[:16]}", value.hexdigest()

    def may_reopen(self, ticket: EditorTicket, cookies: Mapping[str, str]) -> bool:
        name, value = self.reopen_cookie(ticket)
        sent = cookies.get(name)
        return sent is not None and hmac.compare_digest(sent, value)


def used_refusal() -> LinkRefused:
    return LinkRefused(
        Refusal.USED,
        "This caption editor link was already used",
        "Each link opens the editor in one browser, until it saves or expires. Ask the bot for a new one "
        "(/edit_captions, or the Edit captions button).",
    )


def _tampered() -> LinkRefused:
    return LinkRefused(
        Refusal.TAMPERED,
        "This caption editor link is not valid",
        "Its signature does not match: it was changed or copied incompletely. Ask the bot for a new one.",
    )


def _key(user_id: int, sha256: str, nonce: str) -> str:
    return f"captions/{user_id}/{sha256}/{nonce}"
