"""Opening an untrusted zip without trusting it.

Nothing here extracts by the names in the zip: callers get validated entries and copy them, chunk by chunk,
to files they name themselves. Sizes in the headers are checked first (cheap refusals) and the real
decompressed bytes are counted again while copying, because headers can lie.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from jobs.dataset_limits import DatasetError, IngestLimits, first_control_character
from jobs.usertext import clipped, shown

CHUNK_BYTES = 256 * 1024  # bounds memory per copy; larger chunks bought no speed in bench/ingest.py
_LOCAL_HEADER_MAGIC = b"PK\x03\x04"
_END_OF_CENTRAL_DIR_MAGIC = b"PK\x05\x06"
_END_OF_CENTRAL_DIR_SIZE = 22
_MAX_ZIP_COMMENT = 65535
# The records that say where the central directory is and what it holds (APPNOTE 4.3.12-4.3.16).
# End record: signature, disk, directory's disk, entries here, entries, directory size and offset, comment length.
_END_RECORD = struct.Struct("<4s4H2IH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # signature, disk of the zip64 end record, its offset, number of disks
_ZIP64_LOCATOR_MAGIC = b"PK\x06\x07"
# Zip64 end record: signature, record size, two versions, two disks, entries here and in all, directory size, offset.
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2I4Q")
_ZIP64_END_MAGIC = b"PK\x06\x06"
_CENTRAL_RECORD = struct.Struct("<4s6H3I5H2I")  # fixed part; name, extra field and comment follow
_CENTRAL_RECORD_MAGIC = b"PK\x01\x02"
# The methods CPython's zipfile can decompress: stored, deflate, bzip2, lzma.
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_OTHER_ARCHIVES = {
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"\x1f\x8b": "a gzip/tar.gz archive",
}


@dataclass(frozen=True)
class SafeEntry:
    """A regular file in the zip whose name passed every check; `parts` never holds '', '.' or '..'."""

    info: zipfile.ZipInfo
    name: str
    parts: tuple[str, ...]


def open_zip(zip_path: Path, limits: IngestLimits) -> zipfile.ZipFile:
    """Open `zip_path` after checking its size and declared entry count; map every failure to a DatasetError."""
    try:
        size = zip_path.stat().st_size
    except FileNotFoundError:
        raise DatasetError("not_found", f"The dataset file {shown(zip_path.name)} does not exist.") from None
    if size == 0:
        raise DatasetError("not_a_zip", f"{shown(zip_path.name)} is empty (0 bytes), not a zip.")
    if size > limits.max_zip_bytes:
        raise DatasetError(
            "zip_too_large",
            f"The zip is {_mib(size)}; the limit is {_mib(limits.max_zip_bytes)}.",
        )
    with zip_path.open("rb") as handle:
        head = handle.read(16)
        tail_len = min(size, _END_OF_CENTRAL_DIR_SIZE + _MAX_ZIP_COMMENT)
        handle.seek(size - tail_len)
        tail = handle.read(tail_len)
        # zipfile turns every central-directory record into a ZipInfo, whatever the end record's count says:
        # walk the records first and refuse a directory too large or too long before zipfile sees it.
        check_directory(handle, size, tail, zip_path.name, limits)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise _not_a_zip_error(zip_path.name, head, tail, exc) from None
    except (OSError, EOFError, ValueError, NotImplementedError) as exc:
        # NotImplementedError: a record asking for a zip version zipfile does not know.
        raise DatasetError("corrupt_zip", f"{shown(zip_path.name)} is a damaged zip ({clipped(exc)}).") from None
    if len(archive.infolist()) > limits.max_entries:
        archive.close()
        raise _too_many_entries(len(archive.infolist()), limits)
    return archive


def list_entries(archive: zipfile.ZipFile, zip_size: int, limits: IngestLimits) -> list[SafeEntry]:
    """Validate every entry (names, type, encryption, declared sizes) and return the regular files."""
    entries: list[SafeEntry] = []
    seen: set[str] = set()
    declared_total = 0
    for info in archive.infolist():
        parts = _check_name(info.orig_filename)
        name = "/".join(parts)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DatasetError("symlink", f"{shown(name)} is a symbolic link; zips with links are refused.")
        if info.is_dir() or stat.S_ISDIR(mode):
            continue
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise DatasetError("special_file", f"{shown(name)} is not a regular file (device, pipe or socket).")
        if info.flag_bits & 0x1:
            raise DatasetError(
                "encrypted", f"{shown(name)} is encrypted (password-protected); zip the dataset without a password."
            )
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise DatasetError(
                "unsupported_compression",
                f"{shown(name)} uses compression method {info.compress_type}; re-create the zip with standard"
                " (deflate) compression.",
            )
        if name in seen:
            raise DatasetError("duplicate_entry", f"{shown(name)} appears twice in the zip.")
        seen.add(name)
        if info.file_size > limits.max_entry_bytes:
            raise _entry_too_large(name, info.file_size, limits, declared=True)
        if _ratio_exceeded(info.file_size, info.compress_size, limits):
            raise _entry_bomb(name, info.file_size, info.compress_size, limits)
        declared_total += info.file_size
        if declared_total > limits.max_total_bytes:
            raise _total_too_large(declared_total, limits, declared=True)
        entries.append(SafeEntry(info=info, name=name, parts=parts))
    if _ratio_exceeded(declared_total, zip_size, limits):
        raise _zip_bomb(declared_total, zip_size, limits)
    return entries


class ByteBudget:
    """Counts the bytes really decompressed, per entry and overall, and stops a copy the moment a cap is hit."""

    def __init__(self, archive: zipfile.ZipFile, zip_size: int, limits: IngestLimits) -> None:
        self._archive = archive
        self._zip_size = zip_size
        self._limits = limits
        self.total_bytes = 0

    def copy(self, entry: SafeEntry, destination: BinaryIO) -> str:
        """Stream `entry` into `destination`; return the sha256 hex of the bytes written."""
        digest = hashlib.sha256()
        for chunk in self._chunks(entry, self._limits.max_entry_bytes, None):
            digest.update(chunk)
            destination.write(chunk)
        return digest.hexdigest()

    def read_small(self, entry: SafeEntry, max_bytes: int, too_large: DatasetError) -> bytes:
        """Read a small entry (a caption) whole, refusing with `too_large` past `max_bytes`."""
        return b"".join(self._chunks(entry, max_bytes, too_large))

    def read_head(self, entry: SafeEntry, size: int = 64) -> bytes:
        """The first bytes of an entry, to sniff its format without extracting it."""
        try:
            with self._archive.open(entry.info) as source:
                return source.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
            raise _corrupt_entry(entry.name, exc) from None

    def _chunks(self, entry: SafeEntry, max_bytes: int, too_large: DatasetError | None) -> Iterator[bytes]:
        written = 0
        try:
            with self._archive.open(entry.info) as source:
                while chunk := source.read(CHUNK_BYTES):
                    written += len(chunk)
                    self.total_bytes += len(chunk)
                    if written > max_bytes:
                        raise too_large or _entry_too_large(entry.name, written, self._limits, declared=False)
                    if _ratio_exceeded(written, entry.info.compress_size, self._limits):
                        raise _entry_bomb(entry.name, written, entry.info.compress_size, self._limits)
                    if self.total_bytes > self._limits.max_total_bytes:
                        raise _total_too_large(self.total_bytes, self._limits, declared=False)
                    if _ratio_exceeded(self.total_bytes, self._zip_size, self._limits):
                        raise _zip_bomb(self.total_bytes, self._zip_size, self._limits)
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
            raise _corrupt_entry(entry.name, exc) from None


def _check_name(raw: str) -> tuple[str, ...]:
    # orig_filename keeps what zipfile's ZipInfo cuts at a NUL byte (an old malware trick).
    if first_control_character(raw) is not None:
        raise DatasetError("bad_name", f"{shown(raw)} has control characters in its name.")
    if "\\" in raw:
        raise DatasetError(
            "backslash_path", f"{shown(raw)} uses backslashes in its path; re-create the zip with a standard tool."
        )
    if raw.startswith("/"):
        raise DatasetError("absolute_path", f"{shown(raw)} is an absolute path; zip entries must be relative.")
    if _DRIVE.match(raw):
        raise DatasetError("drive_path", f"{shown(raw)} names a drive; zip entries must be relative.")
    parts = tuple(part for part in raw.split("/") if part not in ("", "."))
    if ".." in parts:
        raise DatasetError("path_escape", f"{shown(raw)} climbs out of the dataset with '..'.")
    if not parts:
        raise DatasetError("bad_name", f"{shown(raw)} is not a usable file name.")
    return parts


def check_directory(handle: BinaryIO, size: int, tail: bytes, file_name: str, limits: IngestLimits) -> None:
    """Find the central directory exactly where CPython 3.11's zipfile will read it, bound its size, and count its
    records without parsing them; refuse anything zipfile would read differently from what the zip declares.

    zipfile takes the last end-record signature in the file's last 64 KiB (the one at the very end first), then a
    zip64 end record if a locator sits just before it; it reads the directory from just before those records,
    `size` bytes of it, whatever the offset field says, and parses every record in it. If no end record is found
    this returns quietly: zipfile then fails at once and `_not_a_zip_error` names the problem.
    """
    tail_start = size - len(tail)
    end_at = _end_record_position(tail)
    if end_at is None:
        return
    _, disk, directory_disk, entries_here, entries, directory_size, directory_offset, comment_length = (
        _END_RECORD.unpack_from(tail, end_at)
    )
    after_end = len(tail) - end_at - _END_OF_CENTRAL_DIR_SIZE
    if comment_length != after_end:
        raise _odd_zip(
            file_name,
            f"its end record says a {comment_length}-byte comment follows, but {after_end} bytes do",
        )
    for other in _end_record_signatures(tail[:end_at]):
        other_comment = struct.unpack_from("<H", tail, other + 20)[0]
        if other + _END_OF_CENTRAL_DIR_SIZE + other_comment == len(tail):
            raise _odd_zip(file_name, "it has a second end-of-directory record hidden in its comment")
    declared = [entries_here, entries]
    records_before_end = 0
    zip64 = _read_zip64_end(handle, tail_start + end_at, file_name)
    if zip64 is not None:
        disk, directory_disk, entries_here64, entries64, directory_size, directory_offset = zip64
        declared = [entries_here64, entries64]
        records_before_end = _ZIP64_END_RECORD.size + _ZIP64_LOCATOR.size
    if disk != 0 or directory_disk != 0 or declared[0] != declared[1]:
        raise _odd_zip(file_name, "it says it spans several disks (a split archive)")
    if declared[1] > limits.max_entries:
        raise _too_many_entries(declared[1], limits)
    if directory_size > limits.max_directory_bytes:
        raise DatasetError(
            "zip_directory_too_large",
            f"The zip's list of files (central directory) is {_mib(directory_size)}; the limit is"
            f" {_mib(limits.max_directory_bytes)}, far more than {limits.max_entries} entries need.",
        )
    directory_start = tail_start + end_at - records_before_end - directory_size
    if directory_start < 0:
        raise _odd_zip(file_name, f"its list of files would start {-directory_start} bytes before the file does")
    if directory_offset != directory_start:
        raise _odd_zip(
            file_name,
            f"its end record puts the list of files at byte {directory_offset}, but it sits at byte"
            f" {directory_start} (data before or inside the zip)",
        )
    handle.seek(directory_start)
    directory = handle.read(directory_size)
    records = _count_records(directory, file_name, limits)
    if records != declared[1]:
        raise _odd_zip(file_name, f"its end record says {declared[1]} entries, but its list of files holds {records}")


def _end_record_position(tail: bytes) -> int | None:
    """Where in `tail` zipfile takes the end record from, or None when it finds none."""
    last = len(tail) - _END_OF_CENTRAL_DIR_SIZE
    if last >= 0 and tail[last : last + 4] == _END_OF_CENTRAL_DIR_MAGIC and tail[-2:] == b"\x00\x00":
        return last
    position = tail.rfind(_END_OF_CENTRAL_DIR_MAGIC)
    if position < 0 or position + _END_OF_CENTRAL_DIR_SIZE > len(tail):
        return None
    return position


def _end_record_signatures(data: bytes) -> Iterator[int]:
    position = data.find(_END_OF_CENTRAL_DIR_MAGIC)
    while position >= 0:
        yield position
        position = data.find(_END_OF_CENTRAL_DIR_MAGIC, position + 1)


def _read_zip64_end(handle: BinaryIO, end_at: int, file_name: str) -> tuple[int, int, int, int, int, int] | None:
    """(disk, directory's disk, entries here, entries, directory size, directory offset) from the zip64 end record
    that zipfile would use (the one just before the locator just before the end record), or None."""
    locator_at = end_at - _ZIP64_LOCATOR.size
    if locator_at < 0:
        return None
    handle.seek(locator_at)
    locator = handle.read(_ZIP64_LOCATOR.size)
    if len(locator) != _ZIP64_LOCATOR.size or locator[:4] != _ZIP64_LOCATOR_MAGIC:
        return None
    _, record_disk, record_offset, disks = _ZIP64_LOCATOR.unpack(locator)
    if record_disk != 0 or disks > 1:
        raise _odd_zip(file_name, "it says it spans several disks (a split archive)")
    record_at = locator_at - _ZIP64_END_RECORD.size
    if record_at < 0:
        return None
    handle.seek(record_at)
    record = handle.read(_ZIP64_END_RECORD.size)
    if record[:4] != _ZIP64_END_MAGIC:
        return None
    if record_offset != record_at:
        raise _odd_zip(
            file_name, f"its zip64 locator points at byte {record_offset}, but the zip64 end record is at {record_at}"
        )
    fields = _ZIP64_END_RECORD.unpack(record)
    return fields[4], fields[5], fields[6], fields[7], fields[8], fields[9]


def _count_records(directory: bytes, file_name: str, limits: IngestLimits) -> int:
    """Step over the records by their length fields alone; stop as soon as there are too many."""
    position = records = 0
    while position < len(directory):
        if position + _CENTRAL_RECORD.size > len(directory):
            raise _odd_zip(file_name, "its list of files ends in the middle of a record")
        fields = _CENTRAL_RECORD.unpack_from(directory, position)
        if fields[0] != _CENTRAL_RECORD_MAGIC:
            raise _odd_zip(file_name, f"its list of files has something else than a file record at byte {position}")
        position += _CENTRAL_RECORD.size + fields[10] + fields[11] + fields[12]  # name, extra field, comment
        records += 1
        if records > limits.max_entries:
            raise DatasetError(
                "too_many_entries",
                f"The zip holds more than {limits.max_entries} entries (its end record claims fewer);"
                f" the limit is {limits.max_entries}.",
            )
    if position != len(directory):
        raise _odd_zip(file_name, "the last record of its list of files runs past the list's end")
    return records


def _odd_zip(file_name: str, reason: str) -> DatasetError:
    return DatasetError("corrupt_zip", f"{shown(file_name)} is a damaged or forged zip: {reason}. Re-create the zip.")


def _not_a_zip_error(file_name: str, head: bytes, tail: bytes, exc: Exception) -> DatasetError:
    if head.startswith(_LOCAL_HEADER_MAGIC) and _END_OF_CENTRAL_DIR_MAGIC not in tail:
        return DatasetError(
            "truncated_zip",
            f"{shown(file_name)} starts like a zip but its end is missing: the upload or download was cut short.",
        )
    if _END_OF_CENTRAL_DIR_MAGIC in tail:
        return DatasetError("corrupt_zip", f"{shown(file_name)} is a damaged zip ({clipped(exc)}).")
    for magic, kind in _OTHER_ARCHIVES.items():
        if head.startswith(magic):
            return DatasetError("not_a_zip", f"{shown(file_name)} is {kind}; only .zip is supported.")
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return DatasetError(
            "not_a_zip", f"{shown(file_name)} is a web page, not a zip (a share page instead of a download link?)."
        )
    return DatasetError("not_a_zip", f"{shown(file_name)} is not a zip file.")


def _ratio_exceeded(uncompressed: int, compressed: int, limits: IngestLimits) -> bool:
    return uncompressed > limits.ratio_grace_bytes and uncompressed > max(compressed, 1) * limits.max_ratio


def _too_many_entries(count: int, limits: IngestLimits) -> DatasetError:
    return DatasetError("too_many_entries", f"The zip holds {count} entries; the limit is {limits.max_entries}.")


def _entry_too_large(name: str, size: int, limits: IngestLimits, *, declared: bool) -> DatasetError:
    verb = "declares" if declared else "unpacks to more than"
    return DatasetError(
        "entry_too_large",
        f"{shown(name)} {verb} {_mib(size)}; one file may be at most {_mib(limits.max_entry_bytes)}.",
    )


def _total_too_large(size: int, limits: IngestLimits, *, declared: bool) -> DatasetError:
    verb = "declares" if declared else "unpacks to more than"
    return DatasetError(
        "total_too_large",
        f"The zip {verb} {_mib(size)} in total; the limit is {_mib(limits.max_total_bytes)}.",
    )


def _entry_bomb(name: str, size: int, compressed: int, limits: IngestLimits) -> DatasetError:
    return DatasetError(
        "zip_bomb",
        f"{shown(name)} expands {size // max(compressed, 1)}x ({_mib(size)} from {compressed} bytes);"
        f" more than {limits.max_ratio:g}x looks like a zip bomb.",
    )


def _zip_bomb(size: int, zip_size: int, limits: IngestLimits) -> DatasetError:
    return DatasetError(
        "zip_bomb",
        f"The zip expands {size // max(zip_size, 1)}x overall ({_mib(size)} from {_mib(zip_size)});"
        f" more than {limits.max_ratio:g}x looks like a zip bomb.",
    )


def _corrupt_entry(name: str, exc: Exception) -> DatasetError:
    return DatasetError(
        "corrupt_entry", f"{shown(name)} is damaged inside the zip ({clipped(exc)}); re-create the zip."
    )


def _mib(size: int) -> str:
    if size < 1024**2:
        return f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KiB"
    return f"{size / 1024**2:.1f} MiB"
