"""Settings for datasets that arrive as links or through the upload page (section `fetch`, env `LORABOT_FETCH_*`).

Hook into `jobs.config.Settings` as `fetch: FetchSettings = Field(default_factory=FetchSettings)` and
`_SECTIONS["fetch"] = FetchSettings`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobs.config import _Section
from jobs.fetch.download import FetchResult, FetchTimeouts, fetch_dataset
from jobs.fetch.guard import SsrfGuard


class FetchSettings(_Section):
    model_config = SettingsConfigDict(env_prefix="LORABOT_FETCH_", extra="forbid", env_ignore_empty=True)

    # Plain http lets anyone on the path swap the zip; only for operators who know their network.
    allow_http: bool = False
    # Networks the SSRF guard lets through although they are private (e.g. ["127.0.0.1/32"] for tests or a
    # LAN file server). Empty in production.
    allow_networks: list[str] = Field(default_factory=list)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=10)
    progress_interval_s: float = Field(default=3.0, gt=0)
    # Upload page links: how long a link from /upload stays valid.
    upload_link_lifetime_s: int = Field(default=30 * 60, ge=60, le=24 * 3600)


def fetch_options(settings: FetchSettings) -> dict[str, Any]:
    """The keyword arguments of `fetch_dataset` that come from the settings (guard, timeouts, http, redirects)."""
    return {
        "guard": SsrfGuard(allow=settings.allow_networks),
        "timeouts": FetchTimeouts(
            connect_s=settings.connect_timeout_s,
            read_s=settings.read_timeout_s,
            progress_interval_s=settings.progress_interval_s,
        ),
        "allow_http": settings.allow_http,
        "max_redirects": settings.max_redirects,
    }


def fetch_link_blocking(
    url: str, dest: Path, *, settings: FetchSettings, max_bytes: int, hf_token: str | None = None
) -> FetchResult:
    """`fetch_dataset` for synchronous callers (the CLI): runs its own event loop."""
    return asyncio.run(fetch_dataset(url, dest, max_bytes=max_bytes, hf_token=hf_token, **fetch_options(settings)))


def looks_like_link(text: str) -> bool:
    return "://" in text and not Path(text).exists()
