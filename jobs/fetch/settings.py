"""Settings for datasets that arrive as links or through the upload page (section `fetch`, env `LORABOT_FETCH_*`).

`FetchSettings` itself lives in `jobs.config` (the `fetch` section of `Settings`); it is re-exported here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jobs.config import FetchSettings
from jobs.fetch.download import FetchResult, FetchTimeouts, fetch_dataset
from jobs.fetch.guard import SsrfGuard

__all__ = ["FetchSettings", "fetch_link_blocking", "fetch_options", "looks_like_link"]


def fetch_options(settings: FetchSettings) -> dict[str, Any]:
    """The keyword arguments of `fetch_dataset` that come from the settings (guard, timeouts, http, redirects)."""
    return {
        "guard": SsrfGuard(allow=settings.allow_networks),
        "timeouts": FetchTimeouts(
            connect_s=settings.connect_timeout_s,
            read_s=settings.read_timeout_s,
            progress_interval_s=settings.progress_interval_s,
            total_s=settings.total_timeout_s,
            min_bytes_per_s=settings.min_rate_kb_s * 1000,
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
