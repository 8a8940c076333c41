"""Telling images apart by their bytes: magic-number sniffing, then each extracted file's header (format, size,
frames: priced before anything is decoded), then a full decode of each, one at a time."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from jobs.dataset_limits import DatasetError, IngestLimits
from jobs.usertext import clipped, shown

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
    # GIFs are mostly animations: the same reason as `_animated` is given, so both read alike.
    animation = (
        "; an animated one would train on its first frame only, so save the frames you want as separate images"
        if image_format == "GIF"
        else ""
    )
    return DatasetError(
        "unsupported_image",
        f"{shown(name)} is a {image_format} image; only JPEG, PNG and WEBP are accepted (convert it to PNG or JPEG"
        f"{animation}).",
    )


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding it: enough to price its check."""

    format: str
    width: int
    height: int

    @property
    def decoded_pixels(self) -> int:
        """Pixels the check decodes: a JPEG's at the 1/8 scale `decode_image` asks for, the others' in full."""
        if self.format in _DRAFT_FORMATS:
            return -(-self.width // 8) * -(-self.height // 8)
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        return self.decoded_pixels * _DECODE_BYTES_PER_PIXEL[self.format]


# JPEG decodes at 1/8 scale through Pillow's draft mode (libjpeg's DCT scaling): every byte is still read.
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
# Peak bytes per decoded pixel while checking: Pillow keeps RGB and RGBA in 4 bytes; libwebp's animation decoder
# (Pillow's only WEBP path) holds two RGBA canvases and hands Pillow a copy: 16 bytes, measured (VmHWM 1.0 GB
# for an 8000x8000 WEBP).
_DECODE_BYTES_PER_PIXEL = {"JPEG": 4, "MPO": 4, "PNG": 4, "WEBP": 16}


def read_header(path: Path, name: str, limits: IngestLimits) -> ImageHeader:
    """Format and size of the file at `path` (`name` in the zip) from its header alone, refusing a format we don't
    take, an animation, or an image over the per-image pixel or memory cap, all before any pixel is decoded."""
    with path.open("rb") as handle:
        sniffed = sniff_format(handle.read(64), trust_weak_magic=True)
    # Pillow may half-open formats we refuse (or not know HEIC at all): name them by their magic first.
    if sniffed is not None and sniffed not in ACCEPTED_FORMATS:
        raise unsupported_format_error(name, sniffed)
    with _image_errors(name, limits), Image.open(path) as image:
        image_format = image.format or "unknown"
        if image_format not in ACCEPTED_FORMATS:
            raise unsupported_format_error(name, image_format)
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise _too_many_pixels(name, width, height, limits)
        # APNG's frame count is in its acTL chunk, an animated WEBP's in its ANIM/ANMF chunks: both read by
        # Pillow's open. MPO's second frame is a phone's depth map or preview, not an animation.
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1 and image_format != "MPO":
            raise _animated(name, image_format, frames)
        header = ImageHeader(image_format, width, height)
    if header.decode_bytes > limits.max_decode_bytes:
        raise _too_costly(name, header, limits)
    return header


def decode_image(path: Path, name: str, header: ImageHeader, limits: IngestLimits) -> ImageFacts:
    """Decode every byte of the image (as sd-scripts will) so damage is found here, not on a billed GPU.

    The full bitmap is held for one image at a time and released at once; a JPEG decodes at 1/8 scale.
    """
    with _image_errors(name, limits):
        if header.format == "PNG":
            # load() skips the CRCs of the image data and stops caring after it; verify() reads every chunk's.
            with Image.open(path) as image:
                image.verify()
        with Image.open(path) as image:
            if header.format in _DRAFT_FORMATS:
                image.draft("RGB", (max(1, header.width // 8), max(1, header.height // 8)))
            image.load()
            # After load(), a PNG's eXIf chunk (it may follow the image data) has been read too.
            exif_rotated = image.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1)
    return ImageFacts(header.format, ACCEPTED_FORMATS[header.format], header.width, header.height, exif_rotated)


@contextmanager
def _image_errors(name: str, limits: IngestLimits) -> Iterator[None]:
    """Pillow's ways of failing on a bad file, as one refusal each; our own caps decide, not Pillow's warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as exc:
        # Pillow refuses before we see the size; its message carries the pixel count.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)) / 1e6:.3g} MP" if claimed else "too many pixels"
        raise DatasetError(
            "image_too_large",
            f"{shown(name)} claims {pixels}; the limit is {limits.max_image_pixels / 1e6:.3g} MP per image.",
        ) from None
    except UnidentifiedImageError:
        raise DatasetError("bad_image", f"{shown(name)} is not a valid JPEG, PNG or WEBP image.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise DatasetError(
            "bad_image", f"{shown(name)} is not a valid JPEG, PNG or WEBP image: it is damaged ({clipped(exc)})."
        ) from None


def _too_many_pixels(name: str, width: int, height: int, limits: IngestLimits) -> DatasetError:
    return DatasetError(
        "image_too_large",
        f"{shown(name)} is {width}x{height} ({width * height / 1e6:.3g} MP); the limit is"
        f" {limits.max_image_pixels / 1e6:.3g} MP per image. Downscale it first.",
    )


def _too_costly(name: str, header: ImageHeader, limits: IngestLimits) -> DatasetError:
    per_pixel = _DECODE_BYTES_PER_PIXEL[header.format]
    largest = limits.max_decode_bytes / per_pixel * (64 if header.format in _DRAFT_FORMATS else 1)
    return DatasetError(
        "image_too_costly",
        f"{shown(name)} is {header.width}x{header.height}: checking a {header.format} that large takes about"
        f" {header.decode_bytes / 1024**2:,.0f} MiB of memory, and the limit is"
        f" {limits.max_decode_bytes / 1024**2:,.0f} MiB ({header.format} images up to {largest / 1e6:.3g} MP)."
        " Downscale it: sd-scripts trains at about 1 MP per image.",
    )


def _animated(name: str, image_format: str, frames: int) -> DatasetError:
    kind = "APNG" if image_format == "PNG" else image_format
    return DatasetError(
        "animated_image",
        f"{shown(name)} is an animated {kind} ({frames} frames); sd-scripts would train on its first frame only, so"
        " animated images are refused, as GIFs are. Save the frames you want as separate PNG or JPEG images.",
    )
