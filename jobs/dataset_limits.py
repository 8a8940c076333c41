"""The caps an ingest enforces and the one error type it raises (shared by the dataset_* helpers)."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.errors import UserFacingError


@dataclass(frozen=True)
class IngestLimits:
    """Caps for one dataset zip; the defaults suit a small team and can be overridden from config."""

    max_zip_bytes: int = 2 * 1024**3
    max_entries: int = 5000
    # The zip's central directory, read and walked before zipfile parses it: 5000 records with long names and
    # extra fields take about 2 MiB, and zipfile's cost grows with this size whatever the end record claims.
    max_directory_bytes: int = 4 * 1024**2
    max_entry_bytes: int = 64 * 1024**2
    max_total_bytes: int = 4 * 1024**3
    # Uncompressed/compressed, per entry and for the whole zip: the zip-bomb guard.
    max_ratio: float = 100.0
    max_image_pixels: int = 64_000_000
    max_images: int = 2000
    # Small entries (a caption of repeated spaces) legitimately compress 1000:1; the ratio
    # guard only bites once an entry (or the whole zip) has produced this many bytes.
    ratio_grace_bytes: int = 1024**2
    max_caption_bytes: int = 64 * 1024


class DatasetError(UserFacingError):
    """A refused dataset: `code` is a short stable slug for programs, str() the message for the user."""


def name_some(items: list[str], limit: int = 3) -> str:
    """'a', 'b', 'c' and 4 more: keeps user-facing messages short however many files are at fault."""
    shown = ", ".join(repr(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown
