"""Telling images apart by their bytes: magic-number sniffing plus a Pillow check of each extracted file."""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from jobs.dataset_limits import DatasetError, IngestLimits

# Pillow format name -> the extension the normalised layout uses. MPO is what Pillow calls the JPEG
# files phones write with a second (depth/preview) frame: still a JPEG to every trainer.
ACCEPTED_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# Names that promise an image: such a file must turn out to be a valid, accepted one.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageFacts:
    format: str
    extension: str
    width: int
    height: int
    # sd-scripts' load_image ignores EXIF orientation: a phone photo marked "rotate" trains sideways.
    exif_rotated: bool = False


def sniff_format(head: bytes, *, trust_weak_magic: bool) -> str | None:
    """The image format the first bytes announce, or None. BMP's two-byte magic is only trusted on request."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC"
    if trust_weak_magic and head.startswith(b"BM"):
        return "BMP"
    return None


def unsupported_format_error(name: str, image_format: str) -> DatasetError:
    return DatasetError(
        "unsupported_image",
        f"{name!r} is a {image_format} image; only JPEG, PNG and WEBP are accepted (convert it to PNG or JPEG).",
    )


def inspect_image(path: Path, name: str, limits: IngestLimits) -> ImageFacts:
    """Check that the file at `path` (`name` in the zip) is a sound JPEG/PNG/WEBP within the pixel cap."""
    with path.open("rb") as handle:
        sniffed = sniff_format(handle.read(64), trust_weak_magic=True)
    # Pillow may half-open formats we refuse (or not know HEIC at all): name them by their magic first.
    if sniffed is not None and sniffed not in ACCEPTED_FORMATS:
        raise unsupported_format_error(name, sniffed)
    try:
        with warnings.catch_warnings():
            # Our own pixel cap decides; Pillow's warning threshold (89 MP) is not ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image_format = image.format or "unknown"
                if image_format not in ACCEPTED_FORMATS:
                    raise unsupported_format_error(name, image_format)
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise _too_many_pixels(name, width, height, limits)
                # Read EXIF before PNG's verify(), which must come straight after open; camera
                # orientation tags live in JPEG/WEBP, and a PNG's would need its chunks read first.
                exif_rotated = image_format != "PNG" and image.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1)
                _decode_cheaply(image, image_format, width, height)
    except Image.DecompressionBombError as exc:
        # Pillow refuses before we see the size; its message carries the pixel count.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)) / 1e6:.3g} MP" if claimed else "too many pixels"
        raise DatasetError(
            "image_too_large",
            f"{name!r} claims {pixels}; the limit is {limits.max_image_pixels / 1e6:.3g} MP per image.",
        ) from None
    except UnidentifiedImageError:
        raise DatasetError("bad_image", f"{name!r} is not a valid JPEG, PNG or WEBP image.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise DatasetError(
            "bad_image", f"{name!r} is not a valid JPEG, PNG or WEBP image: it is damaged ({exc})."
        ) from None
    return ImageFacts(image_format, ACCEPTED_FORMATS[image_format], width, height, exif_rotated)


def _decode_cheaply(image: Image.Image, image_format: str, width: int, height: int) -> None:
    # Read every byte of the image so a truncated file is caught here rather than mid-training,
    # without holding the full bitmap: PNG chunks are CRC-checked, JPEG decodes at 1/8 scale.
    if image_format == "PNG":
        image.verify()
        return
    if image_format in ("JPEG", "MPO"):
        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
    image.load()


def _too_many_pixels(name: str, width: int, height: int, limits: IngestLimits) -> DatasetError:
    return DatasetError(
        "image_too_large",
        f"{name!r} is {width}x{height} ({width * height / 1e6:.3g} MP); the limit is"
        f" {limits.max_image_pixels / 1e6:.3g} MP per image. Downscale it first.",
    )
