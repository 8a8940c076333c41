"""The stand-in generation scripts' images: deterministic, and telling which (prompt, LoRA) made them.

Standard library only. An image is two flat bands:
- the top half's colour comes from what a prompt line sets (prompt, negative prompt, seed, steps, scale), so every
  cell of one grid row has the same top;
- the bottom half's colour comes from the networks applied (each LoRA file's sha256 and its multiplier), so every
  cell of one epoch column has the same bottom, and another epoch's LoRA (other bytes) or strength changes it.
The PNG also carries text chunks like gen_img.py's PngInfo ("prompt", "seed", "steps", ...) plus
"lorabot-standin-networks" (JSON: [[sha256, multiplier], ...]) so a test can say which file went into a cell.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Sequence

Colour = tuple[int, int, int]


def _colour(payload: object) -> Colour:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).digest()
    # Kept away from pure black/white so a grid's dark background or white text never looks like a cell.
    return (40 + digest[0] % 176, 40 + digest[1] % 176, 40 + digest[2] % 176)


def prompt_colour(prompt: str, negative: str, seed: int, steps: int, scale: float | None) -> Colour:
    return _colour(["prompt", prompt, negative, seed, steps, scale])


def network_colour(networks: Sequence[tuple[str, float]]) -> Colour:
    """`networks`: (sha256 of the weights file, multiplier) in the order the script applies them."""
    return _colour(["networks", [[sha, float(mul)] for sha, mul in networks]])


def image_png(width: int, height: int, top: Colour, bottom: Colour, text: dict[str, str]) -> bytes:
    row_top = b"\0" + bytes(top) * width  # filter type 0 per scanline
    row_bottom = b"\0" + bytes(bottom) * width
    half = height // 2
    raw = row_top * half + row_bottom * (height - half)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    # iTXt (uncompressed, UTF-8) so prompts in any script survive; Pillow reads it into Image.text like tEXt.
    texts = b"".join(
        chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")) for key, value in text.items()
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + texts
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
