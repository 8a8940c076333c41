"""An epoch's samples made to fit one Discord message's upload limit.

Discord refuses a message whose attachments pass the server's limit (10 MiB without boosts), and the notifier
would retry that message forever, holding every later notice of the job behind it. Six SDXL samples as PNG are
about 1.5-2 MB each, so a gallery can pass the limit: each sample then gets an equal share of it, in the first
encoding that fits (PNG as drawn, then WebP or JPEG at falling quality, then smaller), and one that fits in none
is left out and named, never the whole message.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from jobs.contact_sheet import encode

# Room for the embed and the multipart framing around the files.
_HEADROOM = 64 * 1024
# Smallest longest side a sample is shrunk to before it is left out: below it a sample says little.
_MIN_SIDE = 384
_SHRINK = 0.75


@dataclass(frozen=True)
class FittedGallery:
    files: list[tuple[str, bytes]]  # (file name with the encoding's extension, bytes)
    changed: int  # how many samples were re-encoded or shrunk to fit
    left_out: list[str]  # names of samples that fit in no encoding

    def note(self, limit: int) -> str | None:
        """What the thread should be told, or None when the samples went as drawn."""
        if not self.changed and not self.left_out:
            return None
        mib = f"{limit / (1024 * 1024):.3g} MiB"
        parts = []
        if self.changed:
            parts.append(f"{self.changed} sample(s) re-encoded to fit this server's {mib} upload limit")
        if self.left_out:
            parts.append(f"{len(self.left_out)} left out (too large even shrunk); the contact sheet still has them")
        return "; ".join(parts) + "."


def fit_gallery(samples: list[tuple[str, bytes]], limit: int) -> FittedGallery:
    """``samples`` as (name without extension, PNG bytes) → files whose total fits ``limit`` bytes."""
    total = sum(len(data) for _, data in samples)
    if total + _HEADROOM <= limit:
        return FittedGallery([(f"{name}.png", data) for name, data in samples], 0, [])
    share = max(1, (limit - _HEADROOM) // max(1, len(samples)))
    files: list[tuple[str, bytes]] = []
    left_out: list[str] = []
    changed = 0
    for name, data in samples:
        if len(data) <= share:
            files.append((f"{name}.png", data))
            continue
        fitted = _fit_one(data, share)
        if fitted is None:
            left_out.append(name)
            continue
        encoded, extension = fitted
        files.append((f"{name}.{extension}", encoded))
        changed += 1
    return FittedGallery(files, changed, left_out)


def _fit_one(data: bytes, budget: int) -> tuple[bytes, str] | None:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError):
        return None  # not an image we can re-encode: leaving it out beats holding the thread's queue
    while True:
        found = encode(image, budget)
        if found is not None:
            encoded, fmt, _quality = found
            return encoded, "jpg" if fmt == "jpeg" else fmt
        if max(image.size) * _SHRINK < _MIN_SIDE:
            return None
        image = image.resize((max(1, int(image.width * _SHRINK)), max(1, int(image.height * _SHRINK))))
