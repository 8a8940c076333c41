"""The upload page's routes: `GET /upload` shows the page, `PUT /upload` takes the zip.

The body is streamed to a temp file with a byte cap (refused up front when Content-Length is over it, cut off
when the count passes it), then the ordinary ingest runs off the event loop, the dataset is packed and kept by
content hash under `datasets_dir`, and the bot's `on_dataset_ready` callback posts the report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bot.web.links import UPLOAD_PATH, LinkRefused, UploadLinks, UploadTicket, used_refusal
from bot.web.pages import refusal_page, upload_page
from jobs.dataset import DatasetError, DatasetReport, IngestLimits, ingest_zip, pack_dataset

log = logging.getLogger(__name__)
READ_CHUNK_BYTES = 256 * 1024

OnDatasetReady = Callable[[int, int, str, DatasetReport], Awaitable[None]]


@dataclass(frozen=True)
class UploadConfig:
    work_dir: Path  # temp files of uploads in progress
    datasets_dir: Path  # `<sha256>/` (ingested folder with report.json) and `<sha256>.zip` (packed, for the store)
    max_bytes: int
    limits: IngestLimits = field(default_factory=IngestLimits)


def stored_dataset(datasets_dir: Path, sha256: str) -> tuple[Path, Path]:
    """(ingested folder, packed zip) of a dataset the upload page took."""
    return datasets_dir / sha256, datasets_dir / f"{sha256}.zip"


def add_upload_routes(
    app: web.Application, *, links: UploadLinks, config: UploadConfig, on_dataset_ready: OnDatasetReady
) -> None:
    routes = _UploadRoutes(links, config, on_dataset_ready)
    app.router.add_get(UPLOAD_PATH, routes.page)
    app.router.add_put(UPLOAD_PATH, routes.upload)


class _UploadRoutes:
    def __init__(self, links: UploadLinks, config: UploadConfig, on_dataset_ready: OnDatasetReady) -> None:
        self._links = links
        self._config = config
        self._on_ready = on_dataset_ready

    async def page(self, request: web.Request) -> web.Response:
        try:
            ticket = self._links.verify(dict(request.query))
        except LinkRefused as exc:
            return web.Response(status=exc.status, text=refusal_page(exc.title, str(exc)), content_type="text/html")
        expires = ticket.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return web.Response(
            text=upload_page(self._config.max_bytes, expires),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def upload(self, request: web.Request) -> web.Response:
        try:
            ticket = self._links.verify(dict(request.query))
            if not self._links.used.claim(ticket.nonce):
                raise used_refusal()
        except LinkRefused as exc:
            return _text(exc.status, f"{exc.title}. {exc}")
        try:
            message = await self._receive(request, ticket)
        except _Refused as exc:
            self._links.used.release(ticket.nonce)  # nothing came of it: the user may try again with this link
            return _text(exc.status, exc.message)
        except BaseException:
            self._links.used.release(ticket.nonce)
            raise
        return _text(200, message)

    async def _receive(self, request: web.Request, ticket: UploadTicket) -> str:
        cap = self._config.max_bytes
        if request.content_length is not None and request.content_length > cap:
            raise _Refused(413, f"The zip is {request.content_length / 1e6:.1f} MB; the limit is {cap / 1e6:.1f} MB.")
        self._config.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self._config.work_dir))
        try:
            zip_path = work / "upload.zip"
            await _stream_to(request, zip_path, cap)
            report, sha = await asyncio.to_thread(self._ingest, zip_path, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:
            await self._on_ready(ticket.user_id, ticket.channel_id, sha, report)
        except Exception:
            log.exception("on_dataset_ready failed for an uploaded dataset %s", sha)
            return (
                f"Got it: {report.image_count} images. The dataset is stored, but posting the report to "
                "Discord failed; it will show up in /train's dataset_from list."
            )
        return f"Got it: {report.image_count} images. The dataset report is in your Discord channel."

    def _ingest(self, zip_path: Path, work: Path) -> tuple[DatasetReport, str]:
        try:
            dataset = ingest_zip(zip_path, work / "dataset", limits=self._config.limits)
        except DatasetError as exc:
            raise _Refused(422, f"The dataset was refused: {exc}") from None
        zip_path.unlink()  # the user's zip is no longer needed; keep the disk for the packed copy
        sha, _ = pack_dataset(dataset.root, work / "packed.zip")
        folder, packed = stored_dataset(self._config.datasets_dir, sha)
        self._config.datasets_dir.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            # Same content twice keeps the first copy: the hash names the bytes.
            os.replace(work / "packed.zip", packed)
            os.rename(dataset.root, folder)
        return dataset.report, sha


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _stream_to(request: web.Request, path: Path, cap: int) -> None:
    received = 0
    with path.open("wb") as out:
        async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
            received += len(chunk)
            if received > cap:
                # Close after answering instead of aiohttp's usual 10 s of reading and discarding the rest.
                if request.protocol is not None:
                    request.protocol.force_close()
                raise _Refused(413, f"The upload passed the limit of {cap / 1e6:.1f} MB and was stopped.")
            await asyncio.to_thread(out.write, chunk)
    if received == 0:
        raise _Refused(400, "The upload was empty; choose a .zip file.")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers={"Cache-Control": "no-store"})
