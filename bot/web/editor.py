"""The caption editor's routes (on the upload page's server): the page, its thumbnails, and "save as new dataset".

`GET /captions?<one-time link>` opens the editor in one browser (the one holding the link's reopen cookie may reload
it until the link saves or expires; any other is refused): the stored dataset is fetched to the bot's host (once per
hash, unpacked by the ordinary ingest) and the page lists its images with their captions. `GET /captions/thumb`
serves small JPEG thumbnails made here and cached beside the dataset (the page never loads a full-size image).
`POST /captions/save` takes the edited captions (bounded: body size, number of edits, caption length; each caption
checked like a dataset's: no control characters, no sd-scripts option marker), writes a copy of the dataset with
them, runs that copy through the same ingest as any upload, and hands the packed result to `on_saved`, which stores
it under its new hash for the user (the old dataset stays). One save per link.

What is unpacked here is bounded: a dataset's folder (and its thumbnails) stays only while an opened, unsaved,
unexpired link uses it; `sweep` (on start, then every `sweep_every_s`) removes every other folder and leftover save
folders, and past `max_cache_bytes` the least recently used folders go even if a link uses them (fetched again if it
asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
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
SAVE_PREFIX = "captions-"
ALREADY_SAVED = "This editor already saved a dataset. Ask for a new link."
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")

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
    max_cache_bytes: int = 2 * 1024**3  # unpacked datasets and thumbnails on the bot's host
    sweep_every_s: float = 600.0
    secure_cookie: bool = False  # the public URL is https: the reopen cookie is sent over https only


@dataclass(frozen=True)
class Item:
    index: int
    path: str  # relative to the dataset root, e.g. `10_kana/003.png`
    caption: str | None


def add_editor_routes(
    app: web.Application, *, links: EditorLinks, config: EditorConfig, fetch: FetchDataset, on_saved: OnSaved
) -> EditorRoutes:
    routes = EditorRoutes(links, config, fetch, on_saved)
    app.router.add_get(EDITOR_PATH, routes.page)
    app.router.add_get(THUMB_PATH, routes.thumb)
    app.router.add_post(SAVE_PATH, routes.save)
    app.cleanup_ctx.append(routes.sweeping)
    return routes


class EditorRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EditorRoutes:
    def __init__(self, links: EditorLinks, config: EditorConfig, fetch: FetchDataset, on_saved: OnSaved) -> None:
        self._links = links
        self._config = config
        self._fetch = fetch
        self._on_saved = on_saved
        self._locks: dict[str, asyncio.Lock] = {}
        # A dataset's listing by hash: its content never changes, so one walk serves every thumbnail request.
        self._listings: dict[str, list[Item]] = {}
        # Opened links still in use (nonce -> ticket): their datasets' folders stay until they save or expire.
        self._open: dict[str, EditorTicket] = {}
        # Hashes being unpacked, thumbnailed or copied for a save right now: never swept from under them.
        self._busy: Counter[str] = Counter()

    # -- the page ------------------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        try:
            ticket = self._links.verify(dict(request.query), check_used=False)
            first_open = self._links.used.claim(ticket.nonce)
            # Opened before: only by the browser that holds this link's cookie, and only until the link saved.
            if not first_open and (
                self._links.used.is_used(_saved_key(ticket)) or not self._links.may_reopen(ticket, request.cookies)
            ):
                raise used_refusal()
        except LinkRefused as exc:
            return _html(exc.status, refusal_page(exc.title, str(exc)))
        self._open[ticket.nonce] = ticket
        try:
            items = await self._items(ticket.sha256)
        except DatasetError as exc:
            self._forget(ticket, release=first_open)  # nothing was shown: the link may be tried again
            return _html(422, refusal_page("This dataset could not be opened", str(exc)))
        except Exception:  # the store or the disk: not the user's doing, and nothing to show them but a retry
            self._forget(ticket, release=first_open)
            log.exception("caption editor: dataset %s could not be opened", ticket.sha256[:12])
            return _html(503, refusal_page("This dataset could not be opened", "Try the link again in a minute."))
        expires = ticket.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        response = _html(
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
        name, value = self._links.reopen_cookie(ticket)
        response.set_cookie(
            name,
            value,
            max_age=self._links.lifetime_s,  # the link's own expiry is checked on every open anyway
            path=EDITOR_PATH,
            httponly=True,
            # Lax, not Strict: the link is usually followed from another site (Discord), and Chromium sends no
            # Strict cookie when reloading a page reached that way, so a reload would lose the editor. Lax is still
            # never sent on another site's subrequests or POSTs, and alone it opens nothing without the link.
            samesite="Lax",
            secure=self._config.secure_cookie,
        )
        return response

    def _forget(self, ticket: EditorTicket, *, release: bool) -> None:
        self._open.pop(ticket.nonce, None)
        if release:
            self._links.used.release(ticket.nonce)

    # -- thumbnails ----------------------------------------------------------------------------------------------

    async def thumb(self, request: web.Request) -> web.Response:
        try:
            ticket = self._session(request)
            index = int(request.query.get("i", ""))
        except EditorRefused as exc:
            return web.Response(status=exc.status, text=exc.message)
        except ValueError:
            return web.Response(status=400, text="i must be an image number")
        self._busy[ticket.sha256] += 1  # from the listing to the bytes: not swept meanwhile
        try:
            items = await self._items(ticket.sha256)
            if not 0 <= index < len(items):
                return web.Response(status=404, text="no such image")
            body = await asyncio.to_thread(lambda: self._thumbnail(ticket.sha256, items[index]).read_bytes())
        finally:
            self._busy[ticket.sha256] -= 1
        return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

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
            if self._links.used.is_used(_saved_key(ticket)):
                raise EditorRefused(410, ALREADY_SAVED)
            edits = await self._read_edits(request)
            items = await self._items(ticket.sha256)
            checked = self._check_edits(edits, items)
        except EditorRefused as exc:
            return _json(exc.status, {"ok": False, "message": exc.message})
        saved_key = _saved_key(ticket)
        if not self._links.used.claim(saved_key):
            return _json(410, {"ok": False, "message": ALREADY_SAVED})
        try:
            message = await self._save(ticket, checked)
        except EditorRefused as exc:
            self._links.used.release(saved_key)  # nothing was stored: fix and save again
            return _json(exc.status, {"ok": False, "message": exc.message})
        except BaseException:
            self._links.used.release(saved_key)
            raise
        # The link is done: its unpacked dataset goes unless another open link still uses it.
        self._open.pop(ticket.nonce, None)
        self._drop_unused()
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
        work = Path(tempfile.mkdtemp(prefix=SAVE_PREFIX, dir=self._config.work_dir))
        self._busy[ticket.sha256] += 1
        try:
            report, sha, packed = await asyncio.to_thread(self._build, ticket.sha256, captions, work)
            if sha == ticket.sha256:
                raise EditorRefused(400, "These captions are the dataset's own: there is nothing to save.")
            return await self._on_saved(ticket, sha, packed, report)
        finally:
            self._busy[ticket.sha256] -= 1
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
        if not self._links.used.is_used(_saved_key(ticket)):
            self._open[ticket.nonce] = ticket  # a page opened before a restart still uses its dataset
        return ticket

    async def _items(self, sha256: str) -> list[Item]:
        if sha256 in self._listings:
            return self._listings[sha256]
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if sha256 not in self._listings:
                self._busy[sha256] += 1
                try:
                    self._listings[sha256] = await asyncio.to_thread(self._unpacked_items, sha256)
                finally:
                    self._busy[sha256] -= 1
            return self._listings[sha256]

    # -- what stays on the bot's host ----------------------------------------------------------------------------

    async def sweeping(self, app: web.Application) -> AsyncIterator[None]:
        """The web app's cleanup context: a sweep on start (nothing is open yet, so it clears what an earlier run
        left), then one every `sweep_every_s` while the server runs."""
        await self.sweep()

        async def every() -> None:
            while True:
                await asyncio.sleep(self._config.sweep_every_s)
                try:
                    await self.sweep()
                except Exception:  # a disk error must not stop later sweeps
                    log.exception("caption editor: sweep failed")

        task = asyncio.create_task(every(), name="caption-editor-sweep")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def sweep(self) -> list[str]:
        """Forget expired links, remove every dataset folder no open link uses and leftover save folders, then the
        least recently used folders while the cache is over `max_cache_bytes`. Returns the hashes removed."""
        now = self._links.signer.now_s()
        for nonce, ticket in list(self._open.items()):
            if ticket.expires_at.timestamp() <= now:
                del self._open[nonce]
        removed = self._drop_unused()
        await asyncio.to_thread(self._remove_stale_saves, now)
        sizes = await asyncio.to_thread(self._folder_sizes)
        total = sum(size for size, _ in sizes.values())
        for sha in sorted(sizes, key=lambda h: sizes[h][1]):  # least recently used first
            if total <= self._config.max_cache_bytes:
                break
            if self._busy[sha] == 0:
                self._drop(sha)
                removed.append(sha)
                total -= sizes[sha][0]
        if removed:
            log.info("caption editor: removed %d unpacked dataset(s) from the bot's host", len(removed))
        return removed

    def _drop_unused(self) -> list[str]:
        in_use = {ticket.sha256 for ticket in self._open.values()}
        removed = []
        cache = self._config.cache_dir
        for folder in cache.iterdir() if cache.is_dir() else []:
            sha = folder.name
            if SHA256_NAME.match(sha) and sha not in in_use and self._busy[sha] == 0:
                self._drop(sha)
                removed.append(sha)
        return removed

    def _drop(self, sha256: str) -> None:
        """Out of the listing at once, and renamed away before it is deleted: a request arriving meanwhile fetches
        the dataset again rather than reading a folder half gone."""
        self._listings.pop(sha256, None)
        folder = self._config.cache_dir / sha256
        trash = self._config.cache_dir / f".gone-{sha256}-{secrets.token_hex(4)}"
        try:
            folder.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_stale_saves(self, now: int) -> None:
        """Save folders older than a link's lifetime (a crash mid-save) and any half-deleted dataset folder."""
        for root, pattern in ((self._config.work_dir, f"{SAVE_PREFIX}*"), (self._config.cache_dir, ".gone-*")):
            for folder in root.glob(pattern) if root.is_dir() else []:
                with contextlib.suppress(OSError):
                    if pattern.startswith(".gone") or folder.stat().st_mtime < now - self._links.lifetime_s:
                        shutil.rmtree(folder, ignore_errors=True)

    def _folder_sizes(self) -> dict[str, tuple[int, float]]:
        """Each dataset folder's (bytes, last use): its newest file's modification or access time."""
        sizes: dict[str, tuple[int, float]] = {}
        cache = self._config.cache_dir
        for folder in cache.iterdir() if cache.is_dir() else []:
            if not SHA256_NAME.match(folder.name):
                continue
            total, last = 0, folder.stat().st_mtime
            for path in folder.rglob("*"):
                with contextlib.suppress(OSError):
                    info = path.stat()
                    total += info.st_size
                    last = max(last, info.st_mtime, info.st_atime)
            sizes[folder.name] = (total, last)
        return sizes

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


def _saved_key(ticket: EditorTicket) -> str:
    return f"saved:{ticket.nonce}"


def _html(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _json(status: int, data: dict[str, Any]) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})
