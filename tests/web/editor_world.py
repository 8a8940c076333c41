"""The caption editor's routes on a real aiohttp server (127.0.0.1, random port), with a folder for a store, a
clock the test can move, and the saves recorded."""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from PIL import Image

from bot.caption_editor import editor_secrets
from bot.web.editor import EditorConfig, EditorRoutes, add_editor_routes
from bot.web.editor_links import EditorLinks, EditorTicket
from bot.web.links import UsedLinks
from jobs.dataset import DatasetReport, ingest_zip, pack_dataset
from storage.signing import UrlSigner

SECRET = b"editor-test-secret-0123456789abcdef"


def captioned_zip(images: int = 4, side: int = 640) -> bytes:
    """Full-size images (bigger than any thumbnail) with WD14-style captions; `smile` is in every other one. The
    ingest names them `10_kana/0001.png` .. in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (side, side), (index * 40 % 256, 90, 160)).save(png, "PNG")
            archive.writestr(f"10_kana/{index:03d}.png", png.getvalue())
            tags = ["kana", "girl", "red hair"] + (["smile"] if index % 2 == 0 else ["open mouth"])
            archive.writestr(f"10_kana/{index:03d}.txt", ", ".join(tags))
    return buffer.getvalue()


def stored_dataset(folder: Path, raw: bytes) -> tuple[str, Path]:
    """Ingest and pack `raw` as the bot stores datasets; (sha256, packed zip)."""
    work = folder / "ingest"
    (folder / "raw.zip").write_bytes(raw)
    dataset = ingest_zip(folder / "raw.zip", work, captions="keep")
    sha, _ = pack_dataset(dataset.root, folder / "packed.zip")
    target = folder / f"{sha}.zip"
    shutil.move(folder / "packed.zip", target)
    shutil.rmtree(work)
    return sha, target


@dataclass
class Saved:
    ticket: EditorTicket
    sha256: str
    zip_bytes: bytes
    report: DatasetReport


@dataclass
class EditorWorld:
    root: Path
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    saved: list[Saved] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    base_url: str = ""
    store_down: bool = False
    routes: EditorRoutes | None = None
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        link_key, session_key = editor_secrets(SECRET)
        self.used = UsedLinks(self.root / "used_links.sqlite")
        self.links = EditorLinks(UrlSigner(link_key, clock=lambda: self.now), self.used, session_key, lifetime_s=3600)
        self.config = EditorConfig(cache_dir=self.root / "cache", work_dir=self.root / "work")
        self.store = self.root / "store"
        self.store.mkdir(parents=True)
        self.sha, _ = stored_dataset(self.store, captioned_zip())

    def fetch(self, sha256: str, path: Path) -> None:
        if self.store_down:
            raise ConnectionError("the store is down")
        self.fetched.append(sha256)
        shutil.copyfile(self.store / f"{sha256}.zip", path)

    async def on_saved(self, ticket: EditorTicket, sha256: str, packed: Path, report: DatasetReport) -> str:
        self.saved.append(Saved(ticket, sha256, packed.read_bytes(), report))
        return f"Saved as sha256:{sha256}"

    def link(self, user_id: int = 1001, sha256: str | None = None) -> str:
        return self.links.issue(self.base_url, user_id, sha256 or self.sha)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def start(self) -> EditorWorld:
        app = web.Application()
        self.routes = add_editor_routes(
            app, links=self.links, config=self.config, fetch=self.fetch, on_saved=self.on_saved
        )
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


def query_of(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query))


def zip_captions(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {n: archive.read(n).decode().strip() for n in archive.namelist() if n.endswith(".txt")}
