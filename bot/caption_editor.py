"""Wiring of the caption editor (`bot/web/editor.py`) into the runtime: its links, where it unpacks datasets, and
what a save does (the new dataset into the store and a `datasets` row of the user's, as any ingested dataset).

Like the upload page it needs a public URL; without one, /edit_captions and the Edit captions button say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.uploads import store_dataset
from jobs.dataset import DatasetReport
from jobs.manifest import dataset_key

if TYPE_CHECKING:
    from bot.app import Runtime
    from bot.web.editor_links import EditorLinks, EditorTicket


@dataclass
class CaptionEditorHub:
    links: EditorLinks
    # Hashes of the datasets saved from the editor, in order (tests and logs read it).
    saved: list[str] = field(default_factory=list)


def editor_secrets(url_secret: bytes) -> tuple[bytes, bytes]:
    """Keys of their own for editor links and editor sessions: neither can pass as an upload or artifact URL."""
    link = hmac.new(url_secret, b"lorabot caption editor links v1", hashlib.sha256).digest()
    session = hmac.new(url_secret, b"lorabot caption editor sessions v1", hashlib.sha256).digest()
    return link, session


def install_caption_editor(runtime: Runtime, url_secret: bytes) -> CaptionEditorHub | None:
    """Add `/captions` to the runtime's web app when a public URL is configured."""
    if runtime.settings.public_url is None:
        return None
    from bot.web.editor import EditorConfig, add_editor_routes
    from bot.web.editor_links import EditorLinks
    from bot.web.links import UsedLinks
    from storage.signing import UrlSigner

    data = runtime.settings.data_dir / "caption-editor"
    link_key, session_key = editor_secrets(url_secret)
    links = EditorLinks(UrlSigner(link_key), UsedLinks(data / "used_links.sqlite"), session_key)
    hub = CaptionEditorHub(links)
    config = EditorConfig(
        cache_dir=data / "datasets",
        work_dir=data / "work",
        limits=runtime.planner.limits,
        secure_cookie=runtime.settings.public_url.startswith("https://"),
    )

    def fetch(sha256: str, path: Path) -> None:
        runtime.store.download(dataset_key(sha256), path)

    async def on_saved(ticket: EditorTicket, sha256: str, packed: Path, report: DatasetReport) -> str:
        await asyncio.to_thread(store_dataset, runtime, ticket.user_id, sha256, packed, report)
        hub.saved.append(sha256)
        return (
            f"Saved as a new dataset ({report.image_count} images): sha256:{sha256}. Train on it with "
            f"/train dataset_from:sha256:{sha256} (the old dataset is unchanged)."
        )

    add_editor_routes(runtime.web_app, links=links, config=config, fetch=fetch, on_saved=on_saved)
    return hub
