"""Images are priced from their headers before any is decoded, then decoded in full one at a time.

Cost bombs (many huge solid images in a tiny zip, one image whose decoder needs gigabytes, images slow to
decode) are refused before the expensive step: these tests count the decodes. Damaged images (PNGs included,
whatever their chunk CRCs say) and animations are refused by name. Every refusal leaves nothing on disk.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

import jobs.dataset
from jobs.dataset import DatasetError, IngestLimits, ingest_zip
from jobs.dataset_images import ImageFacts, ImageHeader
from tests.jobs.dataset_corpus import image_bytes, make_zip


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the images the ingest decoded (the expensive step), in order."""
    seen: list[str] = []
    original: Callable[..., ImageFacts] = jobs.dataset.decode_image

    def counting(path: Path, name: str, header: ImageHeader, limits: IngestLimits) -> ImageFacts:
        seen.append(name)
        return original(path, name, header, limits)

    monkeypatch.setattr(jobs.dataset, "decode_image", counting)
    yield seen


def _refused(files: dict[str, bytes], tmp_path: Path, limits: IngestLimits = IngestLimits()) -> DatasetError:  # noqa: B008
    zip_path = make_zip(tmp_path / "in.zip", files)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, out / "dataset", limits=limits)
    assert list(out.iterdir()) == [], "a refusal leaves nothing behind"
    assert str(tmp_path) not in str(refused.value)
    return refused.value


def _solid_webp(side: int, color: tuple[int, int, int] = (12, 80, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def _captioned(images: dict[str, bytes]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, data in images.items():
        files[name] = data
        files[name.rsplit(".", 1)[0] + ".txt"] = b"kana, girl"
    return files


# --- cost bombs -----------------------------------------------------------------------------------------------


def test_big_solid_webps_are_refused_from_their_header(tmp_path: Path, decodes: list[str]) -> None:
    """The issue's shape at default limits: 5000x5000 solid WEBPs (a few KB each) would need 400 MB to check."""
    bomb = _solid_webp(5000)
    assert len(bomb) < 5000
    refused = _refused(_captioned({f"{i}.webp": bomb for i in range(3)}), tmp_path)
    assert refused.code == "image_too_costly"
    assert "'0.webp' is 5000x5000: checking a WEBP that large takes about 381 MiB of memory" in str(refused)
    assert "the limit is 256 MiB (WEBP images up to 16.8 MP)" in str(refused)
    assert decodes == []


@pytest.mark.parametrize(
    ("images", "limit", "largest"),
    [
        ({f"{i}.png": image_bytes(100, 100, color=(i, 1, 1)) for i in range(3)}, 25_000, "'0.png (100x100)'"),
        ({"a.png": image_bytes(40, 40), "b.webp": _solid_webp(200), "c.png": image_bytes(90, 90)}, 45_000, "b.webp"),
        ({f"{i}.jpg": image_bytes(1600, 1600, "JPEG", (i, 2, 2)) for i in range(4)}, 150_000, "'0.jpg (1600x1600)'"),
    ],
    ids=["three PNGs", "mixed formats", "big JPEGs at 1/8 scale"],
)
def test_a_dataset_over_the_pixel_budget_is_refused_before_any_decode(
    images: dict[str, bytes], limit: int, largest: str, tmp_path: Path, decodes: list[str]
) -> None:
    """The decoded pixels are summed from the headers; the refusal names the total and the largest images."""
    refused = _refused(_captioned(images), tmp_path, IngestLimits(max_total_pixels=limit))
    assert refused.code == "too_many_pixels"
    assert f"the limit is {limit / 1e6:,.0f} MP per dataset. The largest: " in str(refused)
    assert largest in str(refused)
    assert decodes == []


def test_jpegs_count_at_the_scale_they_are_checked(tmp_path: Path, decodes: list[str]) -> None:
    """Four 1600x1600 JPEGs decode to 200x200 each (160,000 px): under a budget that four such PNGs exceed."""
    jpegs = {f"{i}.jpg": image_bytes(1600, 1600, "JPEG", (i, 3, 3)) for i in range(4)}
    dataset = ingest_zip(
        make_zip(tmp_path / "in.zip", _captioned(jpegs)), tmp_path / "ds", limits=IngestLimits(max_total_pixels=170_000)
    )
    assert dataset.report.image_count == 4
    assert len(decodes) == 4


def test_one_image_over_the_memory_cap_is_refused_before_any_decode(tmp_path: Path, decodes: list[str]) -> None:
    """A WEBP is priced at 16 bytes per pixel, a PNG at 4: the same size passes as PNG and is refused as WEBP."""
    limits = IngestLimits(max_decode_bytes=1_000_000)
    accepted = ingest_zip(
        make_zip(tmp_path / "ok.zip", _captioned({"a.png": image_bytes(300, 300)})), tmp_path / "ok", limits=limits
    )
    assert accepted.report.image_count == 1
    decodes.clear()
    refused = _refused(_captioned({"a.png": image_bytes(10, 10), "b.webp": _solid_webp(300)}), tmp_path, limits)
    assert refused.code == "image_too_costly"
    assert "'b.webp' is 300x300: checking a WEBP that large takes about 1 MiB" in str(refused)
    assert decodes == []


def test_the_decode_clock_stops_a_slow_dataset_between_images(tmp_path: Path, decodes: list[str]) -> None:
    """With no time to spare, the first image is decoded and the second is not started."""
    images = {f"{i}.png": image_bytes(color=(i, 4, 4)) for i in range(3)}
    refused = _refused(_captioned(images), tmp_path, IngestLimits(max_decode_seconds=0.0))
    assert refused.code == "decode_too_slow"
    assert "(1 of 3 done); the limit is 0 s per dataset" in str(refused)
    assert decodes == ["0.png"]


def test_an_image_over_the_pixel_cap_is_refused_before_any_decode(tmp_path: Path, decodes: list[str]) -> None:
    """The per-image cap is read from the header too, even when earlier images were fine."""
    images = {"a.png": image_bytes(), "b.webp": _solid_webp(400)}
    refused = _refused(_captioned(images), tmp_path, IngestLimits(max_image_pixels=300 * 300))
    assert refused.code == "image_too_large"
    assert "'b.webp' is 400x400" in str(refused)
    assert decodes == []


# --- damaged images -------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def _png(image_data: bytes, after: bytes = b"", *, end: bool = True) -> bytes:
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + image_data + after + (_chunk(b"IEND", b"") if end else b"")


_ROWS = b"".join(b"\x00" + b"\x10\x20\x30" * 64 for _ in range(64))
_IDAT = zlib.compress(_ROWS)
DAMAGED_PNGS = {
    "image data that is not zlib": _png(_chunk(b"IDAT", b"this is not zlib data at all" * 10)),
    "image data cut mid-stream": _png(_chunk(b"IDAT", _IDAT[: len(_IDAT) // 2])),
    "second image chunk garbage": _png(_chunk(b"IDAT", _IDAT[:20]) + _chunk(b"IDAT", b"\xff" * 40)),
    "unknown row filter": _png(_chunk(b"IDAT", zlib.compress(_ROWS.replace(b"\x00\x10", b"\x09\x10")))),
    "image data with a wrong CRC": _png(_chunk(b"IDAT", _IDAT, crc=1)),
    "compressed text bomb after the image": _png(
        _chunk(b"IDAT", _IDAT), _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 5_000_000))
    ),
    "international text bomb after the image": _png(
        _chunk(b"IDAT", _IDAT), _chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + zlib.compress(b"b" * 3_000_000))
    ),
    "text chunk longer than the file": _png(_chunk(b"IDAT", _IDAT), struct.pack(">I", 10**8) + b"tEXtabc"),
    "text chunk with a wrong CRC": _png(_chunk(b"IDAT", _IDAT), _chunk(b"tEXt", b"k\x00v", crc=5)),
    "no end chunk": _png(_chunk(b"IDAT", _IDAT), end=False),
}


@pytest.mark.parametrize("png", DAMAGED_PNGS.values(), ids=DAMAGED_PNGS.keys())
def test_a_damaged_png_is_refused_at_ingest(png: bytes, tmp_path: Path) -> None:
    """The PNG is decoded in full, as sd-scripts will decode it, so damage is found before a GPU is paid for."""
    refused = _refused(_captioned({"a.png": image_bytes(), "b.png": png}), tmp_path)
    assert refused.code == "bad_image"
    assert "'b.png' is not a valid JPEG, PNG or WEBP image: it is damaged" in str(refused)


def test_a_sound_hand_built_png_passes(tmp_path: Path) -> None:
    """The same builder with nothing broken makes a PNG that ingests (the cases above fail for their damage)."""
    dataset = ingest_zip(
        make_zip(tmp_path / "in.zip", _captioned({"b.png": _png(_chunk(b"IDAT", _IDAT))})), tmp_path / "d"
    )
    assert dataset.report.image_count == 1


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("b.webp", _solid_webp(64)[:-20]),
        ("b.webp", image_bytes(200, 200, "WEBP")[:-100]),
        ("b.jpg", image_bytes(300, 300, "JPEG")[:-300]),
    ],
    ids=["lossless webp cut short", "lossy webp cut short", "jpeg cut short"],
)
def test_other_damaged_formats_are_refused_too(name: str, data: bytes, tmp_path: Path) -> None:
    refused = _refused(_captioned({"a.png": image_bytes(), name: data}), tmp_path)
    assert refused.code == "bad_image"
    assert f"'{name}' is not a valid JPEG, PNG or WEBP image" in str(refused)


# --- animations -----------------------------------------------------------------------------------------------


def _animation(fmt: str, frames: int) -> bytes:
    buffer = io.BytesIO()
    images = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(frames)]
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "code", "message"),
    [
        ("b.webp", _animation("WEBP", 2), "animated_image", "'b.webp' is an animated WEBP (2 frames)"),
        ("b.png", _animation("PNG", 3), "animated_image", "'b.png' is an animated APNG (3 frames)"),
        ("b.apng", _animation("PNG", 2), "animated_image", "'b.apng' is an animated APNG (2 frames)"),
        ("b.gif", _animation("GIF", 2), "unsupported_image", "'b.gif' is a GIF image"),
    ],
    ids=["animated webp", "apng", "apng with its own extension", "animated gif"],
)
def test_animations_are_refused_alike(name: str, data: bytes, code: str, message: str, tmp_path: Path) -> None:
    """sd-scripts trains on an animation's first frame only: every animated format is refused, for that reason."""
    refused = _refused(_captioned({"a.png": image_bytes(), name: data}), tmp_path)
    assert refused.code == code
    assert message in str(refused)
    assert "first frame only" in str(refused)


def test_a_still_webp_and_a_one_frame_apng_pass(tmp_path: Path) -> None:
    images = {"a.webp": image_bytes(fmt="WEBP"), "b.png": _animation("PNG", 1)}
    dataset = ingest_zip(make_zip(tmp_path / "in.zip", _captioned(images)), tmp_path / "d")
    assert dataset.report.image_count == 2
