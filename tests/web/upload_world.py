"""The upload page on a real aiohttp server (127.0.0.1, random port) with a clock the test can move."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from PIL import Image

from bot.web import UploadConfig, UploadLinks, UsedLinks, add_upload_routes
from jobs.dataset import DatasetReport
from storage.signing import UrlSigner

SECRET = b"upload-test-secret-0123456789abcdef"


def dataset_zip(images: int = 3, side: int = 256) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (side, side), (index * 40 % 256, 90, 160)).save(png, "PNG")
            archive.writestr(f"10_kana/{index:03d}.png", png.getvalue())
            archive.writestr(f"10_kana/{index:03d}.txt", f"kana, 1girl, pose {index}")
    return buffer.getvalue()


@dataclass
class Ready:
    user_id: int
    channel_id: int
    sha256: str
    report: DatasetReport


@dataclass
class UploadWorld:
    root: Path
    max_bytes: int = 2_000_000
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    ready: list[Ready] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.used = UsedLinks(self.root / "used_links.sqlite")
        self.links = UploadLinks(UrlSigner(SECRET, clock=lambda: self.now), self.used, lifetime_s=600)
        self.config = UploadConfig(
            work_dir=self.root / "incoming", datasets_dir=self.root / "datasets", max_bytes=self.max_bytes
        )

    async def on_ready(self, user_id: int, channel_id: int, sha256: str, report: DatasetReport) -> None:
        self.ready.append(Ready(user_id, channel_id, sha256, report))

    def link(self, user_id: int = 1001, channel_id: int = 2002) -> str:
        return self.links.issue(self.base_url, user_id, channel_id)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def incoming_files(self) -> list[Path]:
        folder = self.config.work_dir
        return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []

    async def start(self, app: web.Application | None = None) -> UploadWorld:
        app = app or web.Application()
        add_upload_routes(app, links=self.links, config=self.config, on_dataset_ready=self.on_ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.used.close()
