"""Wiring of the browser upload page (`bot/web/`) into the runtime and the bot.

The page's routes must be on the aiohttp app before it starts, but what a finished upload does needs Discord:
`install_upload_page` adds the routes with a callback that stores the dataset (store + `datasets` row, the same
content-addressed way `/train` does) and then hands the report to whoever registered `UploadHub.announce` (the
bot's upload cog). Without a public URL there is no page: `/upload` says which setting it needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.dataset import DatasetReport
from jobs.manifest import dataset_key
from storage.db import session_scope
from storage.queries import record_dataset

if TYPE_CHECKING:
    from bot.app import Runtime
    from bot.web.links import UploadLinks

log = logging.getLogger(__name__)

Announce = Callable[[int, int, str, DatasetReport], Awaitable[None]]


@dataclass
class UploadHub:
    links: UploadLinks
    announce: Announce | None = None
    stored: list[str] = field(default_factory=list)


def upload_secret(url_secret: bytes) -> bytes:
    """A key of its own for upload links, so an upload link can never pass as a signed artifact URL."""
    return hmac.new(url_secret, b"lorabot upload links v1", hashlib.sha256).digest()


def install_upload_page(runtime: Runtime, url_secret: bytes) -> UploadHub | None:
    """Add `/upload` to the runtime's web app when a public URL is configured and the page is built."""
    settings = runtime.settings
    if settings.public_url is None:
        return None
    try:
        from bot.web.links import UploadLinks, UsedLinks
        from bot.web.upload import UploadConfig, add_upload_routes, stored_dataset
    except ModuleNotFoundError:
        return None
    from storage.signing import UrlSigner

    fetch = getattr(settings, "fetch", None)
    lifetime = int(getattr(fetch, "upload_link_lifetime_s", 30 * 60))
    data = settings.data_dir / "upload-page"
    links = UploadLinks(
        UrlSigner(upload_secret(url_secret)), UsedLinks(data / "used_links.sqlite"), lifetime_s=lifetime
    )
    hub = UploadHub(links)
    config = UploadConfig(
        work_dir=data / "work",
        datasets_dir=data / "datasets",
        max_bytes=settings.limits.max_dataset_mb * 1024 * 1024,
        limits=runtime.planner.limits,
    )

    async def on_ready(user_id: int, channel_id: int, sha256: str, report: DatasetReport) -> None:
        _, packed = stored_dataset(config.datasets_dir, sha256)
        await asyncio.to_thread(store_dataset, runtime, user_id, sha256, packed, report)
        hub.stored.append(sha256)
        if hub.announce is None:
            raise RuntimeError("the bot is not connected yet")
        await hub.announce(user_id, channel_id, sha256, report)

    add_upload_routes(runtime.web_app, links=links, config=config, on_dataset_ready=on_ready)
    return hub


def store_dataset(runtime: Runtime, user_id: int, sha256: str, packed: Any, report: DatasetReport) -> None:
    """Put a checked dataset zip in the store and record it as the user's (uploads and the caption editor's saves)."""
    runtime.store.put_dataset(sha256, packed)
    with session_scope(runtime.sessions) as s:
        record_dataset(
            s,
            sha256=sha256,
            size=packed.stat().st_size,
            owner_user_id=user_id,
            image_count=report.image_count,
            report=report.to_dict(),
            store_key=dataset_key(sha256),
            now=runtime.clock(),
        )
