"""The artifact store as a local folder, for a bot without a bucket: the bot's aiohttp server
(`storage.http.add_artifact_routes`) serves it to pods through signed, expiring URLs.

Layout under `root`: `objects/<key>` (the bytes), `meta/<key>.json` (sha256, size, content type, written_at:
what S3 keeps as object metadata), `tmp/` (uploads in progress, renamed into place only when complete, so a
reader never sees half a file and a cut-off upload leaves nothing behind).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from storage.artifacts import (
    DEFAULT_MAX_GET_BYTES,
    HASH_CHUNK_BYTES,
    OCTET_STREAM,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLarge,
    ObjectInfo,
    RequestRecord,
    sha256_file,
    validate_key,
    validate_lifetime,
    validate_prefix,
)
from storage.signing import Clock, Operation, UrlSigner, utc_now

DEFAULT_LINK_LIFETIME_S = 3 * 24 * 3600
# A checkpoint is ~200 MB for SDXL, the final LoRA less; 8 GiB leaves room for state folders without letting
# a runaway client fill the disk.
DEFAULT_MAX_PUT_BYTES = 8 * 1024**3


class LocalArtifactStore(ArtifactStore):
    def __init__(
        self,
        root: Path,
        base_url: str,
        secret: bytes,
        clock: Clock = utc_now,
        link_lifetime_s: int = DEFAULT_LINK_LIFETIME_S,
        max_put_bytes: int = DEFAULT_MAX_PUT_BYTES,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL the pods can reach, got {base_url!r}")
        if max_put_bytes <= 0:
            raise ValueError(f"max_put_bytes must be positive, got {max_put_bytes}")
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.signer = UrlSigner(secret, clock)
        self.max_put_bytes = max_put_bytes
        self.link_lifetime_s = validate_lifetime(link_lifetime_s)
        self._clock = clock
        self._objects = root / "objects"
        self._meta = root / "meta"
        self._tmp = root / "tmp"
        for folder in (self._objects, self._meta, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._log: builtins.list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalArtifactStore(root={str(self.root)!r}, base_url={self.base_url!r}, secret=<redacted>)"

    # --- paths --------------------------------------------------------------------------------------------------

    def object_path(self, key: str) -> Path:
        """Where `key`'s bytes live (the HTTP layer serves this file); the key is validated first."""
        path = self._objects / validate_key(key)
        if not path.resolve().is_relative_to(self._objects.resolve()):
            raise ArtifactStoreError(f"artifact key {key!r} resolves outside the store")
        return path

    def _meta_path(self, key: str) -> Path:
        return self._meta / f"{validate_key(key)}.json"

    # --- writing ------------------------------------------------------------------------------------------------

    def begin_upload(self, key: str, max_bytes: int | None = None, content_type: str = OCTET_STREAM) -> LocalUpload:
        """Start a streamed write; use as a context manager so an error or a cut-off leaves no file."""
        self.object_path(key)
        return LocalUpload(self, key, max_bytes if max_bytes is not None else self.max_put_bytes, content_type)

    def put_file(self, key: str, path: Path, content_type: str = OCTET_STREAM) -> ObjectInfo:
        with self.begin_upload(key, max_bytes=path.stat().st_size, content_type=content_type) as upload:
            with path.open("rb") as source:
                while chunk := source.read(HASH_CHUNK_BYTES):
                    upload.write(chunk)
            return upload.commit()

    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> ObjectInfo:
        with self.begin_upload(key, max_bytes=len(data), content_type=content_type) as upload:
            upload.write(data)
            return upload.commit()

    def _install(self, key: str, tmp_path: Path, sha256: str, size: int, content_type: str) -> ObjectInfo:
        """Rename a complete temp file into place, then write its metadata (head() ignores stale metadata)."""
        target = self.object_path(key)
        written_at = self._clock().astimezone(UTC)
        meta = {"sha256": sha256, "size": size, "content_type": content_type, "written_at": written_at.isoformat()}
        meta_path = self._meta_path(key)
        # One lock for renames, metadata and deletes: two uploads of one key must not pair one's bytes with the
        # other's sha256, and a delete pruning empty folders must not pull a folder from under a rename.
        with self._write_lock:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, target)
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
                raise ArtifactStoreError(
                    f"artifact key {key!r} collides with an existing key's folder or file"
                ) from exc
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(meta_path, json.dumps(meta))
        self.record("PutObject", key)
        return ObjectInfo(key=key, size=size, sha256=sha256, last_modified=written_at)

    # --- reading ------------------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        self.record("HeadObject", key)
        return self._info(key)

    def _info(self, key: str) -> ObjectInfo | None:
        path = self.object_path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        meta = self._read_meta(key)
        if meta is not None and meta.size == stat.st_size:
            return ObjectInfo(key, stat.st_size, meta.sha256, meta.written_at)
        # Metadata missing or from an older write of this key: report what the file itself says.
        return ObjectInfo(key, stat.st_size, None, datetime.fromtimestamp(stat.st_mtime, UTC))

    def _read_meta(self, key: str) -> _StoredMeta | None:
        try:
            raw = json.loads(self._meta_path(key).read_text())
            return _StoredMeta(
                sha256=str(raw["sha256"]),
                size=int(raw["size"]),
                content_type=str(raw["content_type"]),
                written_at=datetime.fromisoformat(raw["written_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def stored_content_type(self, key: str) -> str:
        meta = self._read_meta(key)
        return meta.content_type if meta is not None else OCTET_STREAM

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def get_bytes(self, key: str, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes | None:
        self.record("GetObject", key)
        path = self.object_path(key)
        try:
            with path.open("rb") as stream:
                data = stream.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if len(data) > max_bytes:
            raise ArtifactTooLarge(f"artifact {key!r} is larger than {max_bytes} bytes; use download()")
        return data

    def download(self, key: str, path: Path) -> ObjectInfo:
        self.record("GetObject", key)
        source_path = self.object_path(key)
        try:
            source = source_path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactStoreError(f"artifact {key!r} does not exist") from None
        with source:
            path.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            with _temp_beside(path) as (tmp, tmp_path):
                while chunk := source.read(HASH_CHUNK_BYTES):
                    tmp.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                tmp.close()
                os.replace(tmp_path, path)
        return ObjectInfo(key, size, digest.hexdigest(), datetime.fromtimestamp(source_path.stat().st_mtime, UTC))

    def sha256_of(self, key: str) -> str | None:
        self.record("GetObject", key)
        try:
            return sha256_file(self.object_path(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        self.record("ListObjectsV2", prefix)
        # Walk only the deepest folder the prefix names: "jobs/j4" starts at objects/jobs and filters by name.
        start = self._objects / prefix.rpartition("/")[0] if "/" in prefix else self._objects
        found: builtins.list[ObjectInfo] = []
        for folder, _dirs, files in os.walk(start):
            for name in files:
                key = (Path(folder) / name).relative_to(self._objects).as_posix()
                if key.startswith(prefix):
                    info = self._info(key)
                    if info is not None:
                        found.append(info)
        return sorted(found, key=lambda info: info.key)

    # --- deleting -----------------------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self.record("DeleteObject", key)
        with self._write_lock:
            for path in (self.object_path(key), self._meta_path(key)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    path.unlink()
                self._prune_empty_parents(path)

    def delete_prefix(self, prefix: str) -> int:
        if prefix == "":
            raise ValueError("delete_prefix needs a non-empty prefix (refusing to empty the whole store)")
        objects = self.list(prefix)
        for info in objects:
            self.delete(info.key)
        return len(objects)

    def _prune_empty_parents(self, path: Path) -> None:
        # Empty folders would later collide with an object of the same name ("a" vs "a/b"), as S3 never does.
        for parent in path.parents:
            if parent in (self._objects, self._meta) or not parent.is_relative_to(self.root):
                return
            try:
                parent.rmdir()
            except OSError:
                return

    # --- links --------------------------------------------------------------------------------------------------

    def presign_get(self, key: str, expires_s: int) -> str:
        return self.signer.url(self.base_url, Operation.GET, validate_key(key), validate_lifetime(expires_s))

    def presign_put(self, key: str, expires_s: int) -> str:
        return self.signer.url(self.base_url, Operation.PUT, validate_key(key), validate_lifetime(expires_s))

    def public_link(self, key: str, expires_s: int | None = None) -> str:
        return self.presign_get(key, self.link_lifetime_s if expires_s is None else expires_s)

    # --- request log --------------------------------------------------------------------------------------------

    def record(self, operation: str, key: str) -> None:
        with self._log_lock:
            self._log.append(RequestRecord(operation, key))

    def request_log(self) -> builtins.list[RequestRecord]:
        with self._log_lock:
            return builtins.list(self._log)

    def temp_dir(self) -> Path:
        return self._tmp


@dataclass(frozen=True, slots=True)
class _StoredMeta:
    sha256: str
    size: int
    content_type: str
    written_at: datetime


class LocalUpload:
    """One streamed write into the store: bytes go to a temp file, hashed as they come, renamed on commit."""

    def __init__(self, store: LocalArtifactStore, key: str, max_bytes: int, content_type: str) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.size = 0
        self._store = store
        self._content_type = content_type
        self._digest = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix="upload-", dir=store.temp_dir())
        self._tmp_path = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._done = False

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_bytes:
            self.abort()
            raise ArtifactTooLarge(f"upload to {self.key!r} is larger than the limit of {self.max_bytes} bytes")
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def commit(self) -> ObjectInfo:
        if self._done:
            raise ArtifactStoreError(f"upload to {self.key!r} was already finished")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._done = True
        try:
            return self._store._install(
                self.key, self._tmp_path, self._digest.hexdigest(), self.size, self._content_type
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._tmp_path.unlink()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp_path.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp_path = Path(name)
    stream = os.fdopen(fd, "wb")
    try:
        yield stream, tmp_path
    finally:
        stream.close()
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    with _temp_beside(path) as (stream, tmp_path):
        stream.write(text.encode())
        stream.close()
        os.replace(tmp_path, path)
