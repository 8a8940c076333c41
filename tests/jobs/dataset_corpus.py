"""Builders for dataset zips, good and hostile, made byte by byte in a temp folder (no fixtures on disk).

`BAD_INPUTS` is the refusal corpus: each case builds one zip and names the `code` and a message fragment
the ingest must answer with.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from jobs.dataset import IngestLimits


def image_bytes(
    width: int = 64, height: int = 64, fmt: str = "PNG", color: tuple[int, int, int] = (200, 80, 40)
) -> bytes:
    """A solid image in `fmt`; a different `color` gives different bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height` with a tiny body: the classic decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def make_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Write `files` (name -> bytes) in the given order; names are used exactly as given, tricks included."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return path


def make_zip_with_mode(path: Path, name: str, data: bytes, mode: int, extra: dict[str, bytes]) -> Path:
    """A zip whose entry `name` carries Unix `mode` in its external attributes (how zips store symlinks)."""
    make_zip(path, extra)
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = mode << 16
        archive.writestr(info, data)
    return path


def patch_bytes(path: Path, old: bytes, new: bytes, count: int = -1) -> Path:
    """Replace `old` by `new` (same length) in the raw zip: headers and data alike."""
    assert len(old) == len(new)
    raw = path.read_bytes()
    assert old in raw, f"{old!r} not in {path.name}"
    path.write_bytes(raw.replace(old, new, count))
    return path


def set_header_field(path: Path, name: str, local_offset: int, central_offset: int, fmt: str, value: int) -> Path:
    """Overwrite one field of `name`'s local header and its central-directory record."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        local = archive.getinfo(name).header_offset
    struct.pack_into(fmt, raw, local + local_offset, value)
    position = 0
    while (position := raw.find(b"PK\x01\x02", position)) >= 0:
        name_length = struct.unpack_from("<H", raw, position + 28)[0]
        if raw[position + 46 : position + 46 + name_length] == encoded:
            struct.pack_into(fmt, raw, position + central_offset, value)
        position += 4
    path.write_bytes(bytes(raw))
    return path


def set_encrypted(path: Path, name: str) -> Path:
    """Set general-purpose bit 0 (encrypted) in both headers of `name`, as a password-protected zip has."""
    with zipfile.ZipFile(path) as archive:
        flags = archive.getinfo(name).flag_bits | 0x1
    return set_header_field(path, name, 6, 8, "<H", flags)


def ok_pair(stem: str, color: tuple[int, int, int] = (10, 20, 30), caption: str = "kana, girl") -> dict[str, bytes]:
    return {f"{stem}.png": image_bytes(color=color), f"{stem}.txt": caption.encode()}


@dataclass(frozen=True)
class BadInput:
    name: str
    build: Callable[[Path], Path]
    code: str
    message: str
    limits: IngestLimits = field(default_factory=IngestLimits)
    options: dict[str, Any] = field(default_factory=dict)


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Callable[[Path], Path]:
    return lambda folder: make_zip(folder / "in.zip", files, compression)


def _raw(data: bytes, file_name: str = "in.zip") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / file_name
        path.write_bytes(data)
        return path

    return build


def _truncated(folder: Path) -> Path:
    path = make_zip(folder / "in.zip", {**ok_pair("a"), **ok_pair("b", (1, 2, 3))})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _corrupt_data(folder: Path) -> Path:
    files = {"a.png": image_bytes(), "a.txt": b"kana, girl, smile, red dress"}
    path = make_zip(folder / "in.zip", files, zipfile.ZIP_STORED)
    return patch_bytes(path, b"red dress", b"xxx dress")  # the data changes, its CRC-32 does not


def _understated_size(folder: Path) -> Path:
    path = make_zip(folder / "in.zip", {**ok_pair("a"), "b.bin": os.urandom(5000)})
    return set_header_field(path, "b.bin", 22, 24, "<I", 10)  # uncompressed size: 5000 -> 10


def _encrypted(folder: Path) -> Path:
    return set_encrypted(make_zip(folder / "in.zip", ok_pair("a")), "a.png")


def _nul_name(folder: Path) -> Path:
    return patch_bytes(
        make_zip(folder / "in.zip", {**ok_pair("a"), "evil.pngX.txt": b"x"}), b"evil.pngX", b"evil.png\x00"
    )


def _deflate64(folder: Path) -> Path:
    return set_header_field(make_zip(folder / "in.zip", ok_pair("a")), "a.png", 8, 10, "<H", 9)


def _duplicate_entry(folder: Path) -> Path:
    path = make_zip(folder / "in.zip", ok_pair("a"))
    with zipfile.ZipFile(path, "a") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name" but writes it
        archive.writestr("a.txt", b"again")
    return path


def _many_entries(folder: Path) -> Path:
    return make_zip(folder / "in.zip", {f"{i}.txt": b"x" for i in range(7)})


_GIF = image_bytes(fmt="GIF")
_BMP = image_bytes(fmt="BMP")
_PNG = image_bytes()
_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64

BAD_INPUTS: list[BadInput] = [
    BadInput("empty file", _raw(b""), "not_a_zip", "is empty"),
    BadInput("plain text", _raw(b"hello, this is not a zip\n" * 10), "not_a_zip", "is not a zip file"),
    BadInput("html page", _raw(b"<!DOCTYPE html><html><body>Drive</body></html>"), "not_a_zip", "web page"),
    BadInput("rar archive", _raw(b"Rar!\x1a\x07\x00" + b"\x00" * 64), "not_a_zip", "RAR archive"),
    BadInput("truncated zip", _truncated, "truncated_zip", "its end is missing"),
    BadInput("corrupt entry data", _corrupt_data, "corrupt_entry", "'a.txt' is damaged"),
    BadInput("size header understated", _understated_size, "corrupt_entry", "'b.bin' is damaged"),
    BadInput(
        "zip over the size cap", _zip(ok_pair("a")), "zip_too_large", "the limit is", IngestLimits(max_zip_bytes=100)
    ),
    BadInput("encrypted entry", _encrypted, "encrypted", "'a.png' is encrypted"),
    BadInput("absolute path", _zip({"/etc/a.png": _PNG}), "absolute_path", "'/etc/a.png' is an absolute path"),
    BadInput("dot-dot escape", _zip({"../../a.png": _PNG}), "path_escape", "climbs out"),
    BadInput("dot-dot in the middle", _zip({"ok/../../a.png": _PNG}), "path_escape", "'ok/../../a.png'"),
    BadInput("backslash path", _zip({"..\\..\\a.png": _PNG}), "backslash_path", "backslashes"),
    BadInput("drive letter", _zip({"C:/Windows/a.png": _PNG}), "drive_path", "names a drive"),
    BadInput("NUL byte in a name", _nul_name, "bad_name", "control characters"),
    BadInput(
        "symlink",
        lambda folder: make_zip_with_mode(
            folder / "in.zip", "b.png", b"/etc/passwd", stat.S_IFLNK | 0o777, ok_pair("a")
        ),
        "symlink",
        "'b.png' is a symbolic link",
    ),
    BadInput(
        "named pipe",
        lambda folder: make_zip_with_mode(folder / "in.zip", "fifo", b"", stat.S_IFIFO | 0o644, ok_pair("a")),
        "special_file",
        "'fifo' is not a regular file",
    ),
    BadInput("deflate64 method", _deflate64, "unsupported_compression", "compression method 9"),
    BadInput("duplicate entry", _duplicate_entry, "duplicate_entry", "'a.txt' appears twice"),
    BadInput(
        "too many entries", _many_entries, "too_many_entries", "7 entries; the limit is 5", IngestLimits(max_entries=5)
    ),
    BadInput(
        "entry over the size cap",
        _zip({**ok_pair("a"), "big.bin": os.urandom(3000)}),
        "entry_too_large",
        "'big.bin' declares",
        IngestLimits(max_entry_bytes=2000),
    ),
    BadInput(
        "total over the size cap",
        _zip({**ok_pair("a"), "b.bin": os.urandom(3000), "c.bin": os.urandom(3000)}),
        "total_too_large",
        "in total",
        IngestLimits(max_total_bytes=5000),
    ),
    BadInput(
        "entry zip bomb", _zip({**ok_pair("a"), "zeros.txt": b"\x00" * 3 * 1024**2}), "zip_bomb", "'zeros.txt' expands"
    ),
    BadInput(
        "whole-zip bomb",
        _zip({**ok_pair("a"), **{f"z{i}.bin": b"\x00" * 900 * 1024 for i in range(3)}}),
        "zip_bomb",
        "overall",
    ),
    BadInput("no images at all", _zip({"readme.md": b"# hi", "a.txt": b"kana"}), "no_images", "'readme.md'"),
    BadInput("only system files", _zip({"__MACOSX/._a.png": b"x", ".DS_Store": b"x"}), "no_images", "system or hidden"),
    BadInput(
        "garbage named .png",
        _zip({**ok_pair("a"), "b.png": b"not an image at all", "b.txt": b"kana"}),
        "bad_image",
        "'b.png' is not a valid",
    ),
    BadInput(
        "truncated png",
        _zip({**ok_pair("a"), "b.png": image_bytes(300, 300)[:-200], "b.txt": b"kana"}),
        "bad_image",
        "'b.png' is not a valid JPEG, PNG or WEBP image: it is damaged",
    ),
    BadInput(
        "truncated jpeg",
        _zip({**ok_pair("a"), "b.jpg": image_bytes(300, 300, "JPEG")[:400], "b.txt": b"kana"}),
        "bad_image",
        "'b.jpg'",
    ),
    BadInput(
        "image over the pixel cap",
        _zip({"a.png": image_bytes(200, 200), "a.txt": b"kana"}),
        "image_too_large",
        "'a.png' is 200x200",
        IngestLimits(max_image_pixels=100 * 100),
    ),
    BadInput(
        "decompression bomb png",
        _zip({"a.png": png_header_only(30000, 30000), "a.txt": b"kana"}),
        "image_too_large",
        "'a.png' claims 900 MP; the limit is 64 MP",
    ),
    BadInput("gif named .png", _zip({"a.png": _GIF, "a.txt": b"kana"}), "unsupported_image", "'a.png' is a GIF image"),
    BadInput("bmp", _zip({"a.bmp": _BMP, "a.txt": b"kana"}), "unsupported_image", "'a.bmp' is a BMP image"),
    BadInput("heic from a phone", _zip({"a.heic": _HEIC, "a.txt": b"kana"}), "unsupported_image", "HEIC"),
    BadInput(
        "missing captions",
        _zip({**ok_pair("a"), "b.png": image_bytes(color=(1, 1, 1)), "c.png": image_bytes(color=(2, 2, 2))}),
        "missing_captions",
        "2 of 3 images have no caption file (.txt or .caption next to the image): 'b.png', 'c.png'. Add them, or set"
        " generate_captions",
    ),
    BadInput("empty caption", _zip({"a.png": _PNG, "a.txt": b"  \n\t\n"}), "empty_caption", "'a.png' are empty"),
    BadInput(
        "utf-16 caption", _zip({"a.png": _PNG, "a.txt": "kana".encode("utf-16")}), "caption_encoding", "not UTF-8"
    ),
    BadInput(
        "caption too large",
        _zip({"a.png": _PNG, "a.txt": os.urandom(2048).hex().encode()}),
        "caption_too_large",
        "'a.txt' is over 1 KiB",
        IngestLimits(max_caption_bytes=1024),
    ),
    BadInput(
        "captions disagree",
        _zip({"a.png": _PNG, "a.txt": b"kana", "a.caption": b"other"}),
        "caption_conflict",
        "'a.png' has several captions",
    ),
    BadInput(
        "names differ by case",
        _zip({**ok_pair("a"), "A.png": image_bytes(color=(9, 9, 9))}),
        "duplicate_name",
        "differ only in letter case",
    ),
    BadInput(
        "two images, one stem",
        _zip({**ok_pair("a"), "a.jpg": image_bytes(fmt="JPEG")}),
        "duplicate_name",
        "'a.png' and 'a.jpg' share a name",
    ),
    BadInput(
        "folder without repeats",
        _zip(
            {
                **{f"10_kana/{k}": v for k, v in ok_pair("a").items()},
                **{f"extras/{k}": v for k, v in ok_pair("b").items()},
            }
        ),
        "folder_without_repeats",
        "'extras' has no repeats prefix",
    ),
    BadInput(
        "images beside concept folders",
        _zip({**{f"10_kana/{k}": v for k, v in ok_pair("a").items()}, **ok_pair("b")}),
        "mixed_layout",
        "'b.png' sit beside the concept folders",
    ),
    BadInput(
        "nested folders",
        _zip({f"10_kana/sub/{k}": v for k, v in ok_pair("a").items()}),
        "nested_folder",
        "more than one folder deep",
    ),
    BadInput(
        "zero repeats",
        _zip({f"0_kana/{k}": v for k, v in ok_pair("a").items()}),
        "bad_repeats",
        "'0_kana' asks for 0 repeats",
    ),
    BadInput(
        "too many images",
        _zip({**ok_pair("a"), **ok_pair("b", (1, 1, 1)), **ok_pair("c", (2, 2, 2))}),
        "too_many_images",
        "3 images; the limit is 2",
        IngestLimits(max_images=2),
    ),
    BadInput(
        "generate captions without a class",
        _zip(ok_pair("a")),
        "captions_need_trigger",
        "needs both a trigger and a class word",
        options={"generate_captions": True, "trigger": "kana"},
    ),
    BadInput(
        "caption extension is an image type",
        _zip(ok_pair("a")),
        "bad_option",
        "'png' is not usable",
        options={"caption_extension": "png"},
    ),
    BadInput("trigger with a comma", _zip(ok_pair("a")), "bad_option", "no commas", options={"trigger": "kana, girl"}),
]
