"""Volume file helpers: atomic writes (readers on another pod never see half a file) and durable syncs."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp name in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomic write unless the file already holds exactly these bytes; True when it wrote."""
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_tree(path: Path) -> None:
    """Flush every file and folder under path to stable storage (a state folder before we exit)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def reset_dir(path: Path) -> None:
    """An empty folder at `path`: whatever an earlier, interrupted run left there is removed first."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def dataset_files(source: Path) -> Iterator[tuple[Path, Path]]:
    """(file, its folder relative to `source`) for every file of a stored dataset, in a stable order, without the
    top-level COMPLETE marker; each relative folder is yielded before its files are."""
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        rel = Path(folder).relative_to(source)
        for name in sorted(files):
            if rel == Path(".") and name == "COMPLETE":
                continue
            yield Path(folder) / name, rel
