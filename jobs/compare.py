"""/try compare: beside each prompt's row, the training image whose caption shares the most tags with the prompt.

Seed 000's author found ep08 had learned sweat drops from one training image; putting that image next to the
generated ones shows such drift at once. Captions are sd-scripts' comma-separated tags (the captioned dataset the
job trained on: `TRIGGER, CLASS, tags`); prompts are split the same way. Tags compare case-insensitively, with
underscores and runs of spaces as one space (the tagger's `--remove_underscore` and a user's typing agree).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# A caption longer than this is not a caption (a stray file): it is not read.
MAX_CAPTION_BYTES = 64 * 1024
# Images larger than this in the zip are skipped rather than decoded for a thumbnail (lorabot's ingest keeps
# dataset images far below it).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_SPACES = re.compile(r"[\s_]+")


@dataclass(frozen=True)
class SourceMatch:
    image: str  # its path in the dataset zip
    caption: str
    shared: tuple[str, ...]  # the prompt's tags it shares, in the prompt's order
    png: bytes  # a thumbnail, longest side ≤ thumb_px


def tags(text: str, ignore: Iterable[str] = ()) -> list[str]:
    """Normalised comma-separated tags of `text`, in order, without duplicates or the `ignore` ones."""
    skipped = {_normal(word) for word in ignore}
    seen: list[str] = []
    for part in text.split(","):
        tag = _normal(part)
        if tag and tag not in skipped and tag not in seen:
            seen.append(tag)
    return seen


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def best_sources(
    zip_path: Path,
    prompts: Sequence[str],
    *,
    ignore: Iterable[str] = (),
    thumb_px: int = 512,
    caption_extension: str = ".txt",
) -> list[SourceMatch | None]:
    """Per prompt, the captioned image sharing the most tags with it; ties go to the caption with fewer tags (the
    more specific image), then to the first path in the zip's sorted order. None when no caption shares a tag."""
    ignored = list(ignore)
    wanted = [tags(prompt, ignored) for prompt in prompts]
    best: list[tuple[int, int, str, str, tuple[str, ...]] | None] = [None] * len(prompts)
    with zipfile.ZipFile(zip_path) as archive:
        members = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        for name in sorted(members):
            path = PurePosixPath(name)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            caption_name = str(path.with_suffix(caption_extension))
            info = members.get(caption_name)
            if info is None or info.file_size > MAX_CAPTION_BYTES:
                continue
            caption = archive.read(info).decode("utf-8", errors="replace").strip()
            caption_tags = set(tags(caption, ignored))
            for index, prompt_tags in enumerate(wanted):
                shared = tuple(tag for tag in prompt_tags if tag in caption_tags)
                if not shared:
                    continue
                key = (-len(shared), len(caption_tags), name)
                current = best[index]
                if current is None or key < current[:3]:
                    best[index] = (*key, caption, shared)
        results: list[SourceMatch | None] = []
        for choice in best:
            if choice is None:
                results.append(None)
                continue
            _score, _count, name, caption, shared = choice
            info = members[name]
            if info.file_size > MAX_IMAGE_BYTES:
                results.append(None)
                continue
            results.append(SourceMatch(name, caption, shared, _thumbnail(archive.read(info), thumb_px)))
    return results


def _thumbnail(data: bytes, side: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))
        rgb = image.convert("RGB")
        rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        rgb.save(out, "PNG", compress_level=6)
        return out.getvalue()
