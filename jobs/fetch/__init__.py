"""Datasets from links: share-link rewriting, the SSRF guard and the capped, streamed download."""

from jobs.fetch.download import FetchError, FetchProgress, FetchResult, FetchTimeouts, FetchTransport, fetch_dataset
from jobs.fetch.guard import GuardRefused, SsrfGuard, StaticResolver, SystemResolver, forbidden_reason
from jobs.fetch.links import DirectLink, LinkError, direct_link

__all__ = [
    "DirectLink",
    "FetchError",
    "FetchProgress",
    "FetchResult",
    "FetchTimeouts",
    "FetchTransport",
    "GuardRefused",
    "LinkError",
    "SsrfGuard",
    "StaticResolver",
    "SystemResolver",
    "direct_link",
    "fetch_dataset",
    "forbidden_reason",
]
