"""Share links to direct downloads: Hugging Face `/blob/`, Google Drive, Dropbox; any other URL is used as is.

Only rewrites, no network: what a page *answers* (Drive's "can't scan for viruses" page) is handled in
`download.py` with `drive_confirmation_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

LinkKind = Literal["huggingface", "google_drive", "dropbox", "direct"]

HF_HOSTS = frozenset({"huggingface.co", "hf.co"})
DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
DROPBOX_HOSTS = frozenset({"www.dropbox.com", "dropbox.com"})
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{10,}$")
_DRIVE_FILE_PATH = re.compile(r"^/file/(?:u/\d+/)?d/([A-Za-z0-9_-]+)")


class LinkError(ValueError):
    """The text is not a link lorabot can download; str() says what is wrong."""


@dataclass(frozen=True)
class DirectLink:
    url: str
    kind: LinkKind
    # Sent only to `url`'s own host: a redirect to a CDN must not carry the user's token along.
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def direct_link(url: str, *, hf_token: str | None = None) -> DirectLink:
    """The URL that downloads the file behind a share link, plus the headers its host needs."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        hostname, port = parts.hostname, parts.port  # both parse (and may refuse) the authority
    except ValueError:
        # A bracketed host that is no IP address, a port that is no number...: not a link, and no traceback.
        raise LinkError("the dataset link is not a valid web address") from None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise LinkError("the dataset link must be a full web address starting with https://")
    if parts.username or parts.password:
        raise LinkError("the dataset link must not contain a user name or password")
    host = hostname.lower()
    if host in HF_HOSTS:
        return _huggingface(parts.scheme, parts.netloc, parts.path, parts.query, hf_token)
    if host in DRIVE_HOSTS:
        return _google_drive(port, parts.path, parts.query)
    if host in DROPBOX_HOSTS:
        query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items() if k not in ("dl", "raw")}
        query["dl"] = ["1"]
        return DirectLink(
            urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, doseq=True), "")), "dropbox"
        )
    return DirectLink(urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, "")), "direct")


def _huggingface(scheme: str, netloc: str, path: str, query: str, hf_token: str | None) -> DirectLink:
    # /{owner}/{repo}/blob/{rev}/{file} (models) or /datasets/{owner}/{repo}/blob/... : the page vs the bytes.
    segments = path.split("/")
    offset = 2 if len(segments) > 1 and segments[1] in ("datasets", "spaces") else 1
    if len(segments) > offset + 3 and segments[offset + 2] in ("blob", "raw"):
        segments[offset + 2] = "resolve"
    headers = {"Authorization": f"Bearer {hf_token}"} if hf_token else {}
    return DirectLink(urlunsplit((scheme, netloc, "/".join(segments), query, "")), "huggingface", headers)


def _google_drive(port: int | None, path: str, query: str) -> DirectLink:
    match = _DRIVE_FILE_PATH.match(path)
    file_id = match.group(1) if match else next(iter(parse_qs(query).get("id", [])), None)
    if path.startswith(("/drive/folders", "/drive/u/")) or "/folders/" in path:
        raise LinkError("that is a Google Drive folder; zip the images and share the zip file's link instead")
    if file_id is None or not _DRIVE_ID.match(file_id):
        raise LinkError("that Google Drive link names no file; use the file's 'Share → Copy link' address")
    netloc = f"drive.google.com:{port}" if port else "drive.google.com"
    return DirectLink(f"https://{netloc}/uc?{urlencode({'export': 'download', 'id': file_id})}", "google_drive")


class _DownloadForm(HTMLParser):
    """Finds Drive's `<form id="download-form" action=...>` and its hidden inputs, or a `confirm=` link."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.confirm_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and values.get("id") == "download-form":
            self._in_form, self.action = True, values.get("action", "")
        elif tag == "input" and self._in_form and values.get("type") == "hidden" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")
        elif tag == "a" and "confirm=" in values.get("href", "") and self.confirm_href is None:
            self.confirm_href = values["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def drive_confirmation_url(page_url: str, html: str) -> str | None:
    """The "Download anyway" URL from Drive's large-file warning page, or None when the page has none."""
    form = _DownloadForm()
    form.feed(html)
    if form.action:
        action = urlsplit(urljoin(page_url, form.action))
        return urlunsplit((action.scheme, action.netloc, action.path, urlencode(form.fields), ""))
    if form.confirm_href:
        return urljoin(page_url, form.confirm_href)
    return None
