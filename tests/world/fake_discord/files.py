"""Files the fake's CDN serves, kept on disk in one temp folder (removed on stop) so big files never sit in memory."""

from __future__ import annotations

import json
import mimetypes
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from .errors import DiscordError
from .models import StoredFile, new_snowflake

CHUNK = 256 * 1024
FILE_FIELD = re.compile(r"^(?:files\[(\d+)\]|file(\d*))$")
MAX_JSON_BODY = 8 * 1024 * 1024


def guess_content_type(filename: str, fallback: str = "application/octet-stream") -> str:
    return mimetypes.guess_type(filename)[0] or fallback


class FileStore:
    def __init__(self) -> None:
        self.root: Path | None = None
        self.cdn_base = ""
        self.files: dict[int, StoredFile] = {}

    def open(self, cdn_base: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fake-discord-"))
        self.cdn_base = cdn_base

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _url(self, channel_id: int, file_id: int, filename: str) -> str:
        return f"{self.cdn_base}/attachments/{channel_id}/{file_id}/{quote(filename)}"

    def _new_path(self, file_id: int) -> Path:
        if self.root is None:
            raise RuntimeError("the fake Discord is not started: its file store has no folder yet")
        return self.root / str(file_id)

    def add_path(self, path: Path, filename: str, content_type: str, channel_id: int) -> StoredFile:
        """Serve a file the test owns, without copying it (a 200 MB dataset stays where it is)."""
        file_id = new_snowflake()
        stored = StoredFile(
            file_id, filename, content_type, path.stat().st_size, path, self._url(channel_id, file_id, filename)
        )
        self.files[file_id] = stored
        return stored

    def add_bytes(self, data: bytes, filename: str, content_type: str, channel_id: int) -> StoredFile:
        file_id = new_snowflake()
        path = self._new_path(file_id)
        path.write_bytes(data)
        stored = StoredFile(file_id, filename, content_type, len(data), path, self._url(channel_id, file_id, filename))
        self.files[file_id] = stored
        return stored

    async def receive(self, part: BodyPartReader, filename: str, channel_id: int, budget: UploadBudget) -> StoredFile:
        """Stream one multipart file part to disk, counting its bytes against the request's upload limit."""
        file_id = new_snowflake()
        path = self._new_path(file_id)
        size = 0
        with path.open("wb") as sink:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                budget.spend(len(chunk))
                if not budget.exceeded:
                    sink.write(chunk)
        content_type = guess_content_type(filename)
        stored = StoredFile(file_id, filename, content_type, size, path, self._url(channel_id, file_id, filename))
        self.files[file_id] = stored
        return stored


@dataclass
class UploadBudget:
    limit: int
    used: int = 0

    def spend(self, count: int) -> None:
        self.used += count

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit


@dataclass
class Upload:
    index: int
    stored: StoredFile


@dataclass
class ParsedBody:
    """A request body: the JSON payload (from the body or the `payload_json` part) and any uploaded files."""

    json: Any
    uploads: list[Upload] = field(default_factory=list)

    def record(self) -> Any:
        if not self.uploads:
            return self.json
        files = [{"index": u.index, "filename": u.stored.filename, "size": u.stored.size} for u in self.uploads]
        return {"payload_json": self.json, "files": files}


def _parse_json(text: bytes | str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from exc


async def read_body(request: web.Request, store: FileStore, *, channel_id: int, upload_limit: int) -> ParsedBody:
    """Parse JSON or multipart (`payload_json` + `files[n]`); uploads over `upload_limit` in total → 413."""
    if request.content_type != "multipart/form-data":
        raw = await request.content.read(MAX_JSON_BODY + 1)
        if len(raw) > MAX_JSON_BODY:
            raise DiscordError.too_large()
        return ParsedBody(_parse_json(raw) if raw else None)
    reader = await request.multipart()
    budget = UploadBudget(upload_limit)
    payload: Any = None
    uploads: list[Upload] = []
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise DiscordError(400, 50035, "Invalid Form Body", {"_errors": [{"code": "NESTED", "message": ""}]})
        name = part.name or ""
        match = FILE_FIELD.match(name)
        if name == "payload_json":
            payload = _parse_json(await part.read(decode=True))
        elif match:
            index = int(match.group(1) if match.group(1) is not None else (match.group(2) or 0))
            stored = await store.receive(part, part.filename or f"file{index}", channel_id, budget)
            uploads.append(Upload(index, stored))
        else:
            await part.release()
    if budget.exceeded:
        raise DiscordError.too_large()
    body = ParsedBody(payload if payload is not None else {}, uploads)
    _apply_attachment_metadata(body)
    return body


def _apply_attachment_metadata(body: ParsedBody) -> None:
    """Discord takes filename/description from the payload's `attachments[{id: n}]` entry for `files[n]`."""
    entries = body.json.get("attachments") if isinstance(body.json, dict) else None
    if not isinstance(entries, list):
        return
    by_index: dict[int, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("id", "")).isdigit() and int(entry["id"]) < 1_000_000:
            by_index[int(entry["id"])] = entry
    for upload in body.uploads:
        entry = by_index.get(upload.index)
        if entry is None:
            continue
        if isinstance(entry.get("filename"), str):
            upload.stored.filename = entry["filename"]
            upload.stored.content_type = guess_content_type(entry["filename"])
            upload.stored.url = f"{upload.stored.url.rsplit('/', 1)[0]}/{quote(entry['filename'])}"
        if isinstance(entry.get("description"), str):
            upload.stored.description = entry["description"]
