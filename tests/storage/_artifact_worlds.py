"""Small worlds for the artifact store tests: a fake UTC clock, the local store served over real HTTP from a
background thread (so stdlib urllib can call it like a pod would), and an S3 store on the test world's moto
bucket (`s3_world` from tests/world/fixtures_s3.py).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from storage.artifacts_local import LocalArtifactStore
from storage.artifacts_s3 import S3ArtifactStore
from storage.http import add_artifact_routes

URL_SECRET = b"local-url-signing-secret-for-tests"
S3_ACCESS_KEY = "AKIAFAKEKEYFORTESTS01"
S3_SECRET_KEY = "s3cr3t/FakeSecretKeyThatMustNeverBeLogged+0123"


@dataclass
class FakeClock:
    """A UTC clock the test moves by hand (signed-URL expiry, metadata timestamps)."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 24, 12, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class ThreadedAiohttpServer:
    """Serves an aiohttp app on an already-bound socket from its own thread and event loop."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self._app = app
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self._app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the artifact test server did not start within 10 s")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class LocalWorld:
    store: LocalArtifactStore
    clock: FakeClock
    root: Path


@contextmanager
def served_local_store(
    root: Path, max_put_bytes: int = 1024 * 1024, secret: bytes = URL_SECRET
) -> Iterator[LocalWorld]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    clock = FakeClock()
    store = LocalArtifactStore(root, f"http://127.0.0.1:{port}", secret, clock=clock.now, max_put_bytes=max_put_bytes)
    app = web.Application()
    add_artifact_routes(app, store)
    server = ThreadedAiohttpServer(app, sock)
    server.start()
    try:
        yield LocalWorld(store, clock, root)
    finally:
        server.stop()


def s3_store(bucket: str, endpoint_url: str | None, **overrides: object) -> S3ArtifactStore:
    options: dict[str, object] = {
        "prefix": "lorabot/",
        "endpoint_url": endpoint_url,
        "region": "us-east-1",
        "access_key": S3_ACCESS_KEY,
        "secret_key": S3_SECRET_KEY,
        # S3's smallest multipart part is 5 MiB: a 11 MiB file makes three parts and stays fast.
        "multipart_threshold": 5 * 1024 * 1024,
        "multipart_chunksize": 5 * 1024 * 1024,
    }
    options.update(overrides)
    return S3ArtifactStore(bucket, **options)  # type: ignore[arg-type]
