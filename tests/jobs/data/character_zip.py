"""Builds seed 000's dataset shape: N character images with `.txt` captions, small and distinct, in a zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image


def write_character_zip(
    path: Path, *, count: int = 59, trigger: str = "kanachan", folder: str = "", size: int = 64
) -> Path:
    """`count` PNGs (each a different colour, so none is a duplicate) + `TRIGGER, 1girl, …` captions."""
    prefix = f"{folder}/" if folder else ""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            buffer = io.BytesIO()
            colour = (index * 4 % 256, 255 - index * 3 % 256, (index * 37) % 256)
            Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
            archive.writestr(f"{prefix}{trigger}_{index:03d}.png", buffer.getvalue())
            archive.writestr(f"{prefix}{trigger}_{index:03d}.txt", f"{trigger}, 1girl, solo, pose {index}\n")
    return path
