"""A zip's central directory is bounded before zipfile parses it, whatever its end records claim.

zipfile turns every central-directory record into a ZipInfo; a forged end record (count 1, a million records)
once cost seconds and half a gigabyte. Each forged zip here must be refused with its own message, before
zipfile's directory parser runs, with nothing left on disk.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.dataset import DatasetError, IngestLimits, ingest_zip
from jobs.zipsafe import check_directory
from tests.jobs.dataset_corpus import image_bytes

_CAPTION = b"kana, girl"


@dataclass
class Forged:
    """Knobs for one hand-built zip: a real image and caption, then `records` directory records."""

    records: int = 2
    declared: int | None = None  # the end record's count; None = the truth
    directory_size: int | None = None  # None = the truth
    directory_offset: int | None = None  # None = the truth
    zip64: bool = False
    zip64_locator_offset: int | None = None
    disks: int = 1
    comment: bytes = b""
    comment_length: int | None = None
    prefix: bytes = b""
    name_length_overrun: bool = False


def _local(name: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data)
    return (
        struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0) + name + data
    )


def _central(name: bytes, data: bytes, offset: int, *, name_length: int | None = None) -> bytes:
    crc = zlib.crc32(data)
    length = len(name) if name_length is None else name_length
    fixed = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data), len(data), length, 0, 0, 0, 0, 0, offset
    )
    return fixed + name


def build(path: Path, forged: Forged) -> Path:
    """Write the zip byte by byte: no zip tool writes these shapes."""
    files = [(b"a.png", image_bytes()), (b"a.txt", _CAPTION)]
    body = bytearray(forged.prefix)
    offsets = []
    for name, data in files:
        offsets.append(len(body) - len(forged.prefix))
        body += _local(name, data)
    directory = bytearray()
    for index in range(forged.records):
        name, data = files[index] if index < len(files) else (b"%07d.txt" % index, _CAPTION)
        overrun = forged.name_length_overrun and index == forged.records - 1
        directory += _central(name, data, offsets[min(index, 1)], name_length=len(name) + 100 if overrun else None)
    directory_at = len(body) - len(forged.prefix)
    declared = forged.records if forged.declared is None else forged.declared
    size = len(directory) if forged.directory_size is None else forged.directory_size
    offset = directory_at if forged.directory_offset is None else forged.directory_offset
    tail = bytearray()
    if forged.zip64:
        zip64_at = directory_at + len(directory)
        tail += struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, size, offset)
        locator_offset = zip64_at if forged.zip64_locator_offset is None else forged.zip64_locator_offset
        tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, locator_offset, forged.disks)
        short_count, short_size, short_offset = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        short_count, short_size, short_offset = declared, size, offset
    comment_length = len(forged.comment) if forged.comment_length is None else forged.comment_length
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, short_count, short_count, short_size, short_offset, comment_length
    )
    path.write_bytes(bytes(body + directory + tail + end + forged.comment))
    return path


@pytest.fixture
def directory_parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts zipfile's central-directory parses (the expensive step)."""
    calls: list[str] = []
    original = zipfile.ZipFile._RealGetContents  # type: ignore[attr-defined]

    def counting(self: zipfile.ZipFile) -> None:
        calls.append(str(self.filename))
        original(self)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counting)
    yield calls


def _fake_end(comment_after: int) -> bytes:
    return struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, 46, 0, comment_after)


LIMITS = IngestLimits(max_entries=50, max_directory_bytes=64 * 1024)
CASES = [
    ("count says 1, 51 records", Forged(records=51, declared=1), "too_many_entries", "more than 50 entries"),
    ("count says 1, 2000 records", Forged(records=2000, declared=1), "zip_directory_too_large", "list of files"),
    ("zip64 count says 1, 51 records", Forged(records=51, declared=1, zip64=True), "too_many_entries", "more than 50"),
    (
        "zip64 directory size of a terabyte",
        Forged(zip64=True, directory_size=2**40),
        "zip_directory_too_large",
        "1048576.0 MiB",
    ),
    ("count says 60", Forged(records=2, declared=60), "too_many_entries", "60 entries; the limit is 50"),
    ("count says 3, 2 records", Forged(records=2, declared=3), "corrupt_zip", "says 3 entries, but its list"),
    ("size larger than the file", Forged(directory_size=60_000), "corrupt_zip", "bytes before the file does"),
    ("size covers one record", Forged(directory_size=51), "corrupt_zip", "puts the list of files at byte"),
    ("offset lies", Forged(directory_offset=7), "corrupt_zip", "puts the list of files at byte 7"),
    ("data before the zip", Forged(prefix=b"MZ" + b"\x00" * 98), "corrupt_zip", "(data before or inside the zip)"),
    ("comment shorter than said", Forged(comment=b"hi", comment_length=9), "corrupt_zip", "a 9-byte comment"),
    ("bytes after the end record", Forged(comment=b"trailing", comment_length=0), "corrupt_zip", "but 8 bytes do"),
    (
        "second end record in the comment",
        Forged(comment=b"note:" + _fake_end(0)),
        "corrupt_zip",
        "second end-of-directory record",
    ),
    (
        "end record in the comment, lengths matching",
        Forged(comment=_fake_end(4) + b"abcd"),
        "corrupt_zip",
        "second end-of-directory record",
    ),
    ("zip64 locator points elsewhere", Forged(zip64=True, zip64_locator_offset=3), "corrupt_zip", "locator points"),
    ("split archive", Forged(zip64=True, disks=3), "corrupt_zip", "spans several disks"),
    ("name runs past the directory", Forged(name_length_overrun=True), "corrupt_zip", "runs past the list's end"),
    ("directory size cuts a record", Forged(directory_size=80), "corrupt_zip", "puts the list of files"),
]


@pytest.mark.parametrize(("label", "forged", "code", "message"), CASES, ids=[case[0] for case in CASES])
def test_forged_directory_is_refused_before_zipfile_parses_it(
    label: str, forged: Forged, code: str, message: str, tmp_path: Path, directory_parses: list[str]
) -> None:
    """Each forged zip gets its own refusal; zipfile's directory parser never runs; nothing is left behind."""
    zip_path = build(tmp_path / "in.zip", forged)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(DatasetError) as refused:
        ingest_zip(zip_path, out / "dataset", limits=LIMITS)

    assert refused.value.code == code, str(refused.value)
    assert message in str(refused.value)
    assert directory_parses == []
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zip", "out"]


def test_the_walk_stops_at_the_entry_limit(tmp_path: Path) -> None:
    """The walk gives up at record max_entries + 1: a broken record further on is never reached."""
    zip_path = build(tmp_path / "in.zip", Forged(records=3000, declared=1))
    raw = bytearray(zip_path.read_bytes())
    position = -1
    for _ in range(20):
        position = raw.index(b"PK\x01\x02", position + 1)
    raw[position : position + 2] = b"XX"  # record 20 is not a record
    zip_path.write_bytes(bytes(raw))
    limits = IngestLimits(max_entries=10, max_directory_bytes=1024**2)

    with zip_path.open("rb") as handle, pytest.raises(DatasetError) as refused:
        size = zip_path.stat().st_size
        handle.seek(size - 22)
        check_directory(handle, size, handle.read(22), "in.zip", limits)

    assert refused.value.code == "too_many_entries"
    assert "more than 10 entries" in str(refused.value)


@pytest.mark.parametrize(
    "forged",
    [Forged(), Forged(zip64=True), Forged(comment=b"made by hand")],
    ids=["plain", "zip64", "with a comment"],
)
def test_honest_hand_built_zips_still_ingest(forged: Forged, tmp_path: Path) -> None:
    """The same builder, telling the truth (zip64 end records and comments included), makes a zip that ingests."""
    zip_path = build(tmp_path / "in.zip", forged)
    dataset = ingest_zip(zip_path, tmp_path / "dataset", limits=LIMITS)
    assert dataset.report.image_count == 1


def test_zips_from_zipfile_with_zip64_records_still_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile writes zip64 end records past 65535 entries; lowering that threshold makes a small one."""
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    zip_path = tmp_path / "in.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("a.png", image_bytes())
        archive.writestr("a.txt", _CAPTION)
        archive.comment = b"zip64 from zipfile"
    assert b"PK\x06\x06" in zip_path.read_bytes()
    monkeypatch.undo()
    dataset = ingest_zip(zip_path, tmp_path / "dataset")
    assert dataset.report.image_count == 1
