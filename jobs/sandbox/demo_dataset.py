"""The demo's dataset, drawn at run time: simple shapes on gradients with `TRIGGER, CLASS, …` captions.

Nothing is shipped or downloaded: the same call always draws the same pictures, so the demo's dataset hash (and
the volume's dataset cache) is stable from run to run.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

DEMO_TRIGGER = "lbdemo"
DEMO_CLASS = "toy"
DEMO_IMAGES = 12
DEMO_IMAGE_SIZE = 512
# sd-scripts' `{repeats}_{concept}` layout: the folder name carries the repeats, as users' zips often do.
DEMO_FOLDER = f"2_{DEMO_TRIGGER}"

_SHAPES = ("circle", "square", "triangle", "diamond")
_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 60, 60)),
    ("green", (60, 180, 90)),
    ("blue", (60, 100, 220)),
)
_BACKGROUNDS = ("sunset gradient", "sky gradient", "grey gradient")
_GRADIENTS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "sunset gradient": ((250, 200, 120), (140, 60, 120)),
    "sky gradient": ((200, 230, 255), (60, 120, 200)),
    "grey gradient": ((235, 235, 235), (110, 110, 110)),
}


@dataclass(frozen=True)
class DemoImage:
    name: str
    caption: str
    png: bytes


def demo_images(count: int = DEMO_IMAGES, size: int = DEMO_IMAGE_SIZE) -> list[DemoImage]:
    """`count` PNGs (`size`² pixels) of a coloured shape on a gradient, each with its caption."""
    if count < 1:
        raise ValueError(f"the demo needs at least one image, got {count}")
    if size < 64:
        raise ValueError(f"images must be at least 64 pixels wide, got {size}")
    images = []
    for index in range(count):
        shape = _SHAPES[index % len(_SHAPES)]
        colour_name, colour = _COLOURS[index % len(_COLOURS)]
        background = _BACKGROUNDS[(index // len(_SHAPES)) % len(_BACKGROUNDS)]
        picture = _draw(shape, colour, _GRADIENTS[background], size)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        caption = f"{DEMO_TRIGGER}, {DEMO_CLASS}, {colour_name} {shape}, {background}"
        images.append(DemoImage(f"{index:03d}-{colour_name}-{shape}", caption, buffer.getvalue()))
    return images


def write_demo_zip(path: Path, count: int = DEMO_IMAGES, size: int = DEMO_IMAGE_SIZE) -> Path:
    """The dataset as the zip a user would attach to /train: `2_lbdemo/NNN-….png` + `.txt` captions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for image in demo_images(count, size):
            zf.writestr(_entry(f"{DEMO_FOLDER}/{image.name}.png"), image.png)
            zf.writestr(_entry(f"{DEMO_FOLDER}/{image.name}.txt"), image.caption)
    return path


def _entry(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp: writestr(str, …) stamps the current second, and two runs a second apart would differ.
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def _draw(
    shape: str, colour: tuple[int, int, int], gradient: tuple[tuple[int, int, int], tuple[int, int, int]], size: int
) -> Image.Image:
    top, bottom = gradient
    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    for y in range(size):
        t = y / (size - 1)
        row = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (size, y)], fill=row)
    margin = size // 5
    box = (margin, margin, size - margin, size - margin)
    middle = size // 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(middle, margin), (size - margin, size - margin), (margin, size - margin)], fill=colour)
    else:
        corners = [(middle, margin), (size - margin, middle), (middle, size - margin), (margin, middle)]
        draw.polygon(corners, fill=colour)
    return picture
