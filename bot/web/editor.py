"""The caption editor's routes (on the upload page's server): the page, its thumbnails, and "save as new dataset".

`GET /captions?<one-time link>` opens the editor once: the stored dataset is fetched to the bot's host (once per
hash, unpacked by the ordinary ingest) and the page lists its images with their captions. `GET /captions/thumb`
serves small JPEG thumbnails made here and cached beside the dataset (the page never loads a full-size image).
`POST /captions/save` takes the edited captions (bounded: body size, number of edits, caption length; each caption
checked like a dataset's: no control characters, no sd-scripts option marker), writes a copy of the dataset with
them, runs that copy through the same ingest as any upload, and hands the packed result to `on_saved`, which stores
it under its new hash for the user (the old dataset stays). One save per link.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from bot.web.editor_links import EDITOR_PATH, EditorLinks, EditorTicket, used_refusal
from bot.web.links import LinkRefused
from bot.web.pages import editor_page, refusal_page
from jobs.dataset import DatasetError, DatasetReport, IngestLimits, ingest_zip, pack_dataset
from jobs.dataset_limits import first_control_character
from jobs.rules import option_marker_refusal
from jobs.usertext import shown

log = logging.getLogger(__name__)

THUMB_PATH = f"{EDITOR_PATH}/thumb"
SAVE_PATH = f"{EDITOR_PATH}/save"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIX = ".txt"

# Download `datasets/<sha256>.zip` from the store to the given path (blocking is fine: it runs in a thread).
FetchDataset = Callable[[str, Path], None]
# Store the saved dataset (its packed zip and report) for the ticket's user under `sha256`; returns the line the
# page shows.
OnSaved = Callable[[EditorTicket, str, Path, DatasetReport], Awaitable[str]]


@dataclass(frozen=True)
class EditorConfig:
    cache_dir: Path  # `<sha256>/dataset/` (unpacked) and `<sha256>/thumbs/<index>.jpg`
    work_dir: Path  # saves in progress
    limits: IngestLimits = field(default_factory=IngestLimits)
    thumb_px: int = 192
    max_caption_chars: int = 1000
    max_edits: int = 5000
    max_body_bytes: int = 512 * 1024


@dataclass(frozen=True)
class Item:
    index: int
    path: str  # relative to the dataset root, e.g. `10_kana/003.png`
    caption: str | None


def add_editor_routes(
    app: web.Application, *, links: EditorLinks, config: EditorConfig, fetch: FetchDataset, on_saved: OnSaved
) -> None:
    routes = _EditorRoutes(links, config, fetch, on_saved)
    app.router.add_get(EDITOR_PATH, routes.page)
    app.router.add_get(THUMB_PATH, routes.thumb)
    app.router.add_post(SAVE_PATH, routes.save)


class EditorRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _EditorRoutes:
    def __init__(self, links: EditorLinks, config: EditorConfig, fetch: FetchDataset, on_saved: OnSaved) -> None:
        self._links = links
        self._config = config
        self._fetch = fetch
        self._on_saved = on_saved
        self._locks: dict[str, asyncio.Lock] = {}
        # A dataset's listing by hash: its content never changes, so one walk serves every thumbnail request.
        self._listings: dict[str, list[Item]] = {}

    # -- the page ------------------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        try:
            ticket = self._links.verify(dict(request.query))
            if not self._links.used.claim(ticket.nonce):
                raise used_refusal()
        except LinkRefused as exc:
            return _html(exc.status, refusal_page(exc.title, str(exc)))
        try:
            items = await self._items(ticket.sha256)
        except DatasetError as exc:
            self._links.used.release(ticket.nonce)  # nothing was shown: the link may be tried again
            return _html(422, refusal_page("This dataset could not be opened", str(exc)))
        except Exception:  # the store or the disk: not the user's doing, and nothing to show them but a retry
            self._links.used.release(ticket.nonce)
            log.exception("caption editor: dataset %s could not be opened", ticket.sha256[:12])
            return _html(503, refusal_page("This dataset could not be opened", "Try the link again in a minute."))
        expires = ticket.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return _html(
            200,
            editor_page(
                items=[{"i": it.index, "path": it.path, "caption": it.caption or ""} for it in items],
                query=request.query_string,
                token=self._links.session_token(ticket),
                sha256=ticket.sha256,
                expires_at_text=expires,
                max_caption_chars=self._config.max_caption_chars,
            ),
        )

    # -- thumbnails ----------------------------------------------------------------------------------------------

    async def thumb(self, request: web.Request) -> web.Response:
        try:
            ticket = self._session(request)
            index = int(request.query.get("i", ""))
        except EditorRefused as exc:
            return web.Response(status=exc.status, text=exc.message)
        except ValueError:
            return web.Response(status=400, text="i must be an image number")
        items = await self._items(ticket.sha256)
        if not 0 <= index < len(items):
            return web.Response(status=404, text="no such image")
        path = await asyncio.to_thread(self._thumbnail, ticket.sha256, items[index])
        return web.Response(
            body=path.read_bytes(), content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    def _thumbnail(self, sha256: str, item: Item) -> Path:
        """A small JPEG of one image, made once and kept beside the unpacked dataset."""
        folder = self._config.cache_dir / sha256 / "thumbs"
        target = folder / f"{item.index}.jpg"
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        source = self._config.cache_dir / sha256 / "dataset" / item.path
        # A name of its own per writer: two requests for the same thumbnail may both make it; the rename is atomic.
        partial = folder / f".{item.index}.{os.getpid()}.{threading.get_ident()}.part"
        with Image.open(source) as image:
            image.thumbnail((self._config.thumb_px, self._config.thumb_px))
            image.convert("RGB").save(partial, "JPEG", quality=80)
        partial.replace(target)
        return target

    # -- save as new dataset -------------------------------------------------------------------------------------

    async def save(self, request: web.Request) -> web.Response:
        try:
            ticket = self._session(request)
            edits = await self._read_edits(request)
            items = await self._items(ticket.sha256)
            checked = self._check_edits(edits, items)
        except EditorRefused as exc:
            return _json(exc.status, {"ok": False, "message": exc.message})
        saved_key = f"saved:{ticket.nonce}"
        if not self._links.used.claim(saved_key):
            return _json(410, {"ok": False, "message": "This editor already saved a dataset. Ask for a new link."})
        try:
            message = await self._save(ticket, checked)
        except EditorRefused as exc:
            self._links.used.release(saved_key)  # nothing was stored: fix and save again
            return _json(exc.status, {"ok": False, "message": exc.message})
        except BaseException:
            self._links.used.release(saved_key)
            raise
        return _json(200, {"ok": True, "message": message})

    async def _read_edits(self, request: web.Request) -> dict[str, Any]:
        cap = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise EditorRefused(413, f"The edits are {request.content_length:,} bytes; the limit is {cap:,}.")
        body = await request.content.read(cap + 1)
        if len(body) > cap:
            raise EditorRefused(413, f"The edits are over the limit of {cap:,} bytes.")
        try:
            data = json.loads(body)
        except ValueError:
            raise EditorRefused(400, "The edits are not valid JSON.") from None
        captions = data.get("captions") if isinstance(data, dict) else None
        if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
            raise EditorRefused(400, 'The edits must be {"captions": {"<image path>": "<caption>", ...}}.')
        return captions

    def _check_edits(self, edits: dict[str, str], items: list[Item]) -> dict[str, str]:
        """The edited captions, each trimmed and checked, or EditorRefused naming the first bad one."""
        if not edits:
            raise EditorRefused(400, "No caption was changed: there is nothing to save.")
        limit = min(self._config.max_edits, len(items))
        if len(edits) > limit:
            raise EditorRefused(413, f"{len(edits)} edits; this dataset has {len(items)} images.")
        known = {item.path for item in items}
        checked: dict[str, str] = {}
        for path, raw in edits.items():
            if path not in known:
                raise EditorRefused(400, f"{shown(path, 80)} is not an image of this dataset.")
            text = raw.strip()
            if len(text) > self._config.max_caption_chars:
                raise EditorRefused(
                    400,
                    f"The caption of {path} is {len(text):,} characters; the limit is "
                    f"{self._config.max_caption_chars:,}.",
                )
            # The ingest's rule for caption files, with no exception for line breaks: a caption is one line here.
            found = first_control_character(text)
            if found is not None:
                position, char = found
                raise EditorRefused(
                    400,
                    f"The caption of {path} holds the control character U+{ord(char):04X} at character "
                    f"{position + 1}; captions with control or text-direction characters are refused, not cleaned. "
                    "Remove it.",
                )
            option = option_marker_refusal(text, f"The caption of {path}")
            if option is not None:
                raise EditorRefused(400, option)
            checked[path] = text
        return checked

    async def _save(self, ticket: EditorTicket, captions: dict[str, str]) -> str:
        self._config.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="captions-", dir=self._config.work_dir))
        try:
            report, sha, packed = await asyncio.to_thread(self._build, ticket.sha256, captions, work)
            if sha == ticket.sha256:
                raise EditorRefused(400, "These captions are the dataset's own: there is nothing to save.")
            return await self._on_saved(ticket, sha, packed, report)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _build(self, sha256: str, captions: dict[str, str], work: Path) -> tuple[DatasetReport, str, Path]:
        """A copy of the dataset with the edited captions, re-checked by the ingest like any upload, then packed."""
        source = self._config.cache_dir / sha256 / "dataset"
        edited = work / "edited"
        shutil.copytree(source, edited)
        for path, text in captions.items():
            (edited / path).with_suffix(CAPTION_SUFFIX).write_text(text + "\n", encoding="utf-8")
        pack_dataset(edited, work / "edited.zip")
        try:
            dataset = ingest_zip(work / "edited.zip", work / "checked", limits=self._config.limits, captions="keep")
        except DatasetError as exc:
            raise EditorRefused(422, f"The edited dataset was refused: {exc}") from None
        sha, _ = pack_dataset(dataset.root, work / "packed.zip")
        return dataset.report, sha, work / "packed.zip"

    # -- shared --------------------------------------------------------------------------------------------------

    def _session(self, request: web.Request) -> EditorTicket:
        """The ticket of an opened page: the link's signature and expiry, and the page's session token."""
        try:
            ticket = self._links.verify(dict(request.query), check_used=False)
        except LinkRefused as exc:
            raise EditorRefused(exc.status, f"{exc.title}. {exc}") from None
        if not self._links.used.is_used(ticket.nonce) or not self._links.check_session(ticket, request.query.get("t")):
            raise EditorRefused(403, "This request does not come from an opened editor page.")
        return ticket

    async def _items(self, sha256: str) -> list[Item]:
        if sha256 in self._listings:
            return self._listings[sha256]
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if sha256 not in self._listings:
                self._listings[sha256] = await asyncio.to_thread(self._unpacked_items, sha256)
            return self._listings[sha256]

    def _unpacked_items(self, sha256: str) -> list[Item]:
        """The dataset's images and captions, unpacked on the bot's host once per hash (by the ingest: the stored zip
        is read as carefully as an upload)."""
        folder = self._config.cache_dir / sha256
        root = folder / "dataset"
        if not root.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            zip_path = folder / "stored.zip"
            self._fetch(sha256, zip_path)
            try:
                ingest_zip(zip_path, folder / "dataset.tmp", limits=self._config.limits, captions="keep")
            except BaseException:
                shutil.rmtree(folder / "dataset.tmp", ignore_errors=True)
                raise
            finally:
                zip_path.unlink(missing_ok=True)
            (folder / "dataset.tmp").rename(root)
        images = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        items = []
        for index, rel in enumerate(images):
            caption_file = (root / rel).with_suffix(CAPTION_SUFFIX)
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else None
            items.append(Item(index, rel, caption))
        return items


def _html(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _json(status: int, data: dict[str, Any]) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})
