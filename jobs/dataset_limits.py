"""The caps an ingest enforces and the one error type it raises (shared by the dataset_* helpers)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from jobs.errors import UserFacingError
from jobs.usertext import shown


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
    # Pixels decoded to check the whole dataset (a JPEG counts at the 1/8 scale it is checked at): bounds the
    # time a tiny zip of huge solid images can cost. 1000 PNGs of 1024x1024 fit.
    max_total_pixels: int = 1_200_000_000
    # Memory one image's check may take (its pixels times what its decoder holds per pixel), so one ingest's
    # peak stays flat: a PNG of 64 MP fits, a WEBP (16 bytes per pixel in libwebp + Pillow) up to 16 MP.
    max_decode_bytes: int = 256 * 1024**2
    # Wall time for decoding all images: the backstop for images whose cost is not in their pixel count
    # (a progressive JPEG with thousands of scans). 2000 1024x1024 JPEGs take about 16 s here.
    max_decode_seconds: float = 180.0
    max_images: int = 2000
    # Small entries (a caption of repeated spaces) legitimately compress 1000:1; the ratio
    # guard only bites once an entry (or the whole zip) has produced this many bytes.
    ratio_grace_bytes: int = 1024**2
    max_caption_bytes: int = 64 * 1024


class DatasetError(UserFacingError):
    """A refused dataset: `code` is a short stable slug for programs, str() the message for the user."""


def name_some(items: list[str], limit: int = 3) -> str:
    """'a', 'b', 'c' and 4 more: keeps user-facing messages short however many files are at fault."""
    listed = ", ".join(shown(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{listed} and {rest} more" if rest > 0 else listed


# Characters that change how text shows instead of showing: bidi embeddings, overrides, isolates and marks (the
# "Trojan Source" set). With the C0/C1 controls they would reach training captions and be echoed to terminals.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def first_control_character(text: str, allowed: str = "") -> tuple[int, str] | None:
    """(position, character) of the first control character (C0, DEL, C1), bidi control or lone surrogate in
    `text` that is not in `allowed`, or None. Zero-width joiners stay legal: emoji and several scripts need them."""
    for position, char in enumerate(text):
        if char in allowed:
            continue
        if char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs"):
            return position, char
    return None
