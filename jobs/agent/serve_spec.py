"""The manifest's `serve` section (docs/CONTRACTS.md "Try requests"): where the /try requests are and how often to
look. Its own module so jobs/agent/manifest.py can check it without importing the serve loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The fastest poll the agent accepts: a presigned GET per second is plenty for a person waiting on /try.
MIN_POLL_S = 1.0


@dataclass(frozen=True)
class ServeSpec:
    requests_url: str
    poll_s: float


def parse_serve_spec(value: Any, stages: list[str]) -> ServeSpec | None:
    """None without a `serve` section; ValueError (the manifest's error text) when it is malformed or when the
    stages ask to serve without one."""
    if value is None:
        if "serve" in stages:
            raise ValueError("manifest stages include 'serve' but the manifest has no serve section")
        return None
    if not isinstance(value, dict):
        raise ValueError("manifest serve must be an object")
    url = value.get("requests_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("manifest serve.requests_url must be an http(s) URL")
    poll = value.get("poll_s", 5)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll < MIN_POLL_S:
        raise ValueError(f"manifest serve.poll_s must be a number of seconds ≥ {MIN_POLL_S:g}")
    if "serve" in stages and stages != ["serve"]:
        raise ValueError("manifest stages ['serve'] stand alone (a TRY pod); a training pod serves after 'train'")
    return ServeSpec(requests_url=url, poll_s=float(poll))
