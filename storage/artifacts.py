"""The artifact store: what the domain (`jobs/`) knows about the bucket that bot and pods exchange files through.

Two implementations share this protocol: `storage.artifacts_s3.S3ArtifactStore` (S3, R2, moto) and
`storage.artifacts_local.LocalArtifactStore` (a folder served by the bot's aiohttp server with signed URLs).
This module stays free of boto3 and aiohttp so `jobs/` can import it; the bucket layout is in docs/CONTRACTS.md.

Keys are always relative ("jobs/j42/manifest.json"); each store puts them under its own prefix or folder.
The helpers at the bottom of the protocol (content-addressed datasets, checkpoint retention) are written once in
terms of the primitives, so a store (or a test fake) that subclasses `ArtifactStore` explicitly gets them for free.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

# Status JSON, manifests and logs are small; anything bigger must go through download().
DEFAULT_MAX_GET_BYTES = 16 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
# SigV4 presigned URLs cannot live longer than 7 days; the local signer keeps the same bound so both stores agree.
MAX_LINK_LIFETIME_S = 7 * 24 * 3600
HASH_CHUNK_BYTES = 1024 * 1024

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# jobs/<id>/epochs/<epoch:06d>/<output_name>-<epoch:06d>.safetensors (docs/CONTRACTS.md, bucket layout)
_EPOCH_CHECKPOINT = re.compile(r"jobs/(?P<job_id>[^/]+)/epochs/(?P<epoch>\d{6})/[^/]+\.safetensors")


class ArtifactStoreError(Exception):
    """A store operation failed; the message names the operation and key, never a credential."""


class InvalidKey(ArtifactStoreError, ValueError):
    """A key or prefix that could escape the store's prefix or confuse a file system."""


class ArtifactTooLarge(ArtifactStoreError):
    """An object is bigger than the caller allowed (get_bytes is for small objects only)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    # Known when we wrote the object ourselves (S3 metadata / local sidecar); None for foreign uploads and list().
    sha256: str | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request a store made or served, for tests that count uploads (e.g. "the dataset was stored once")."""

    operation: str  # S3 operation name ("PutObject", "UploadPart", ...) or local verb ("put", "get", ...)
    key: str


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What the daily clean-up may delete: per-epoch checkpoints older than `checkpoint_max_age`.

    The final LoRA is never touched; `pinned_epochs` maps a job id to the epochs its user chose to keep.
    """

    checkpoint_max_age: timedelta
    pinned_epochs: Mapping[str, Set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.checkpoint_max_age < timedelta(0):
            raise ValueError(f"checkpoint_max_age must not be negative, got {self.checkpoint_max_age}")


@dataclass(frozen=True, slots=True)
class CleanupReport:
    deleted_keys: list[str]
    freed_bytes: int
    kept_pinned: int


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise InvalidKey saying exactly what is wrong."""
    if isinstance(key, str) and key.endswith("/"):
        raise InvalidKey(f"artifact key must not end with '/': {key!r}")
    _check_common(key, what="key")
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, but "" (everything) and a trailing "/" are allowed."""
    if prefix == "":
        return prefix
    _check_common(prefix.removesuffix("/"), what="prefix")
    return prefix


def _check_common(value: str, *, what: str) -> None:
    if not isinstance(value, str) or value == "":
        raise InvalidKey(f"artifact {what} must be a non-empty string, got {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidKey(f"artifact {what} must not contain control characters: {value!r}")
    if value.startswith("/") or "\\" in value or re.match(r"[A-Za-z]:", value):
        raise InvalidKey(f"artifact {what} must be a relative path with '/' separators: {value!r}")
    parts = value.split("/")
    if ".." in parts:
        raise InvalidKey(f"artifact {what} must not contain '..': {value!r}")
    if "." in parts or "" in parts:
        raise InvalidKey(f"artifact {what} must not contain empty or '.' segments: {value!r}")
    if len(value.encode()) > 900:
        # S3 allows 1024 bytes including our prefix; leave room for it.
        raise InvalidKey(f"artifact {what} is longer than 900 bytes: {value[:60]!r}...")


def validate_lifetime(expires_s: int) -> int:
    if not isinstance(expires_s, int) or isinstance(expires_s, bool):
        raise ValueError(f"link lifetime must be whole seconds (int), got {expires_s!r}")
    if not 1 <= expires_s <= MAX_LINK_LIFETIME_S:
        raise ValueError(f"link lifetime must be between 1 s and {MAX_LINK_LIFETIME_S} s (7 days), got {expires_s}")
    return expires_s


def validate_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256!r}")
    return sha256


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_key(sha256: str) -> str:
    return f"datasets/{validate_sha256(sha256)}.zip"


def epoch_of_checkpoint(key: str) -> tuple[str, int] | None:
    """(job_id, epoch) when `key` is a per-epoch checkpoint, else None (samples, final LoRA, status...)."""
    match = _EPOCH_CHECKPOINT.fullmatch(key)
    if match is None:
        return None
    return match["job_id"], int(match["epoch"])


class ArtifactStore(Protocol):
    """The bucket as the domain sees it. Methods are blocking: async callers use `asyncio.to_thread`."""

    def put_file(self, key: str, path: Path, content_type: str = OCTET_STREAM) -> ObjectInfo:
        """Upload a file (streamed; multipart when big) and record its sha256 with the object."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> ObjectInfo: ...

    def get_bytes(self, key: str, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes | None:
        """A small object's content, or None when missing; ArtifactTooLarge above `max_bytes`."""
        ...

    def download(self, key: str, path: Path) -> ObjectInfo:
        """Stream an object to `path` (atomically: a temp file then rename); sha256 is computed while writing.

        Raises ArtifactStoreError when the object is missing.
        """
        ...

    def exists(self, key: str) -> bool: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def sha256_of(self, key: str) -> str | None:
        """The sha256 of the stored bytes, computed by streaming them (to verify a pod's upload); None if missing."""
        ...

    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a non-empty prefix; returns how many were deleted."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""
        ...

    def presign_get(self, key: str, expires_s: int) -> str: ...

    def presign_put(self, key: str, expires_s: int) -> str:
        """A URL a pod PUTs to with `Content-Type: application/octet-stream` (no credentials on the pod)."""
        ...

    def public_link(self, key: str, expires_s: int | None = None) -> str:
        """A download link for users; `expires_s` defaults to the store's configured link lifetime."""
        ...

    def request_log(self) -> builtins.list[RequestRecord]:
        """Requests made (S3) or served (local) so far; for tests and diagnostics."""
        ...

    # --- helpers written once, in terms of the primitives above -------------------------------------------------

    def put_dataset(self, sha256: str, path: Path) -> tuple[ObjectInfo, bool]:
        """Store a normalised dataset zip once under `datasets/<sha256>.zip`.

        Returns (info, uploaded). An object of the same size already under that key is the same dataset
        (the key is its content hash), so nothing is uploaded. A file whose hash differs from `sha256` is refused.
        """
        key = dataset_key(sha256)
        size = path.stat().st_size
        existing = self.head(key)
        if existing is not None and existing.size == size:
            return existing, False
        actual = sha256_file(path)
        if actual != sha256:
            raise ValueError(f"dataset {path.name} has sha256 {actual}, not the declared {sha256}")
        return self.put_file(key, path), True

    def prune_epoch_checkpoints(self, job_prefix: str, keep_epochs: Set[int]) -> builtins.list[str]:
        """Delete the per-epoch checkpoints of one job except `keep_epochs`; samples and the final LoRA stay."""
        prefix = validate_prefix(job_prefix.rstrip("/") + "/")
        deleted: list[str] = []
        for info in self.list(prefix + "epochs/"):
            found = epoch_of_checkpoint(info.key)
            if found is not None and found[1] not in keep_epochs:
                self.delete(info.key)
                deleted.append(info.key)
        return deleted

    def cleanup_expired(self, now: datetime, policy: RetentionPolicy) -> CleanupReport:
        """The daily clean-up (seed 001: checkpoints pile up): drop old, unpinned per-epoch checkpoints."""
        if now.tzinfo is None:
            raise ValueError("cleanup_expired needs an aware UTC datetime for `now`")
        cutoff = now.astimezone(UTC) - policy.checkpoint_max_age
        deleted: list[str] = []
        freed = 0
        kept_pinned = 0
        for info in self.list("jobs/"):
            found = epoch_of_checkpoint(info.key)
            if found is None or info.last_modified is None or info.last_modified > cutoff:
                continue
            job_id, epoch = found
            if epoch in policy.pinned_epochs.get(job_id, frozenset()):
                kept_pinned += 1
                continue
            self.delete(info.key)
            deleted.append(info.key)
            freed += info.size
        return CleanupReport(deleted_keys=deleted, freed_bytes=freed, kept_pinned=kept_pinned)
