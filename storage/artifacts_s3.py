"""The artifact store on S3 or an S3-compatible service (Cloudflare R2, moto in tests) through boto3.

Methods block; callers on the event loop use `asyncio.to_thread`. Our own uploads carry their sha256 in object
metadata (`x-amz-meta-sha256`) so `head()` can answer without reading the object; a pod's presigned upload has
none, and `sha256_of()` streams the object to verify it. Credentials live only inside the boto3 client: they
are never in `repr()`, in a log line or in an error message.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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

DEFAULT_LINK_LIFETIME_S = 3 * 24 * 3600
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_DELETE_BATCH = 1000  # the most keys DeleteObjects accepts at once


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        link_lifetime_s: int = DEFAULT_LINK_LIFETIME_S,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_attempts: int = 5,
    ) -> None:
        """`region="auto"` and the account's endpoint URL for R2; None credentials use boto3's usual chain.

        `endpoint_url=None` falls back to `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (the test world's moto).
        """
        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both the S3 access key and the secret key, or neither")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix.strip("/") + "/") if prefix.strip("/") else ""
        # Resolved here rather than left to boto3 so the addressing style below knows about it.
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.endpoint_url = endpoint_url
        if region == "auto" and not endpoint_url:
            raise ValueError(
                'S3 region "auto" is for Cloudflare R2 and needs its endpoint URL; '
                "for AWS, give the bucket's region (e.g. us-east-1)"
            )
        self.region = region
        self.link_lifetime_s = validate_lifetime(link_lifetime_s)
        self._credentials_given = access_key is not None
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize, max_concurrency=4
        )
        config = Config(
            signature_version="s3v4",
            # Path-style works on AWS, R2 and moto alike; virtual hosts need DNS a local endpoint lacks.
            s3={"addressing_style": "path"} if endpoint_url else {},
            # Only checksum when S3 requires it: R2 and presigned PUTs from pods don't speak the newer defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        self._log: builtins.list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._client.meta.events.register("provide-client-params.s3.*", self._remember_key)
        self._client.meta.events.register("before-call.s3.*", self._record_call)

    def __repr__(self) -> str:
        return (
            f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r}, "
            f"region={self.region!r}, credentials={'<redacted>' if self._credentials_given else 'from environment'})"
        )

    def close(self) -> None:
        """Close the client's pooled connections (at shutdown; the store is unusable afterwards)."""
        self._client.close()

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _relative(self, full_key: str) -> str:
        return full_key.removeprefix(self.prefix)

    # --- writing ------------------------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, content_type: str = OCTET_STREAM) -> ObjectInfo:
        full = self._full(key)
        sha256 = sha256_file(path)
        size = path.stat().st_size
        extra = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        with _errors("upload", key):
            self._client.upload_file(str(path), self.bucket, full, ExtraArgs=extra, Config=self._transfer)
        return ObjectInfo(key=key, size=size, sha256=sha256)

    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> ObjectInfo:
        full = self._full(key)
        sha256 = hashlib.sha256(data).hexdigest()
        with _errors("upload", key):
            self._client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType=content_type, Metadata={"sha256": sha256}
            )
        return ObjectInfo(key=key, size=len(data), sha256=sha256)

    # --- reading ------------------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            with _errors("head", key):
                response = self._client.head_object(Bucket=self.bucket, Key=full)
        except _Missing:
            return None
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            sha256=response.get("Metadata", {}).get("sha256"),
            last_modified=response.get("LastModified"),
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def get_bytes(self, key: str, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes | None:
        full = self._full(key)
        try:
            with _errors("download", key):
                response = self._client.get_object(Bucket=self.bucket, Key=full)
                body = response["Body"]
                try:
                    if int(response["ContentLength"]) > max_bytes:
                        raise ArtifactTooLarge(f"artifact {key!r} is larger than {max_bytes} bytes; use download()")
                    data: bytes = body.read()
                finally:
                    body.close()
        except _Missing:
            return None
        return data

    def download(self, key: str, path: Path) -> ObjectInfo:
        full = self._full(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        tmp_path = Path(name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                try:
                    with _errors("download", key):
                        response = self._client.get_object(Bucket=self.bucket, Key=full)
                        sha256, size = _copy_hashing(response["Body"], tmp)
                except _Missing:
                    raise ArtifactStoreError(f"artifact {key!r} does not exist") from None
            os.replace(tmp_path, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        return ObjectInfo(key=key, size=size, sha256=sha256, last_modified=response.get("LastModified"))

    def sha256_of(self, key: str) -> str | None:
        full = self._full(key)
        try:
            with _errors("download", key):
                response = self._client.get_object(Bucket=self.bucket, Key=full)
                sha256, _size = _copy_hashing(response["Body"], None)
        except _Missing:
            return None
        return sha256

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        full_prefix = self.prefix + validate_prefix(prefix)
        found: builtins.list[ObjectInfo] = []
        with _errors("list", prefix):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    found.append(
                        ObjectInfo(
                            key=self._relative(item["Key"]),
                            size=int(item["Size"]),
                            last_modified=item.get("LastModified"),
                        )
                    )
        return sorted(found, key=lambda info: info.key)

    # --- deleting -----------------------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        with _errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_prefix(self, prefix: str) -> int:
        if prefix == "":
            raise ValueError("delete_prefix needs a non-empty prefix (refusing to empty the whole store)")
        keys = [info.key for info in self.list(prefix)]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self._full(key)} for key in keys[start : start + _DELETE_BATCH]]
            with _errors("delete", prefix):
                response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise ArtifactStoreError(
                    f"S3 could not delete {len(response['Errors'])} objects under {prefix!r}, "
                    f"first {self._relative(first.get('Key', ''))!r}: {first.get('Code')}"
                )
        return len(keys)

    # --- links --------------------------------------------------------------------------------------------------

    def presign_get(self, key: str, expires_s: int) -> str:
        params = {"Bucket": self.bucket, "Key": self._full(key)}
        with _errors("presign", key):
            url: str = self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=validate_lifetime(expires_s)
            )
        return url

    def presign_put(self, key: str, expires_s: int) -> str:
        # The Content-Type is part of the signature: the pod must send exactly application/octet-stream.
        params = {"Bucket": self.bucket, "Key": self._full(key), "ContentType": OCTET_STREAM}
        with _errors("presign", key):
            url: str = self._client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=validate_lifetime(expires_s)
            )
        return url

    def public_link(self, key: str, expires_s: int | None = None) -> str:
        return self.presign_get(key, self.link_lifetime_s if expires_s is None else expires_s)

    # --- request log --------------------------------------------------------------------------------------------

    def _remember_key(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # provide-client-params also fires for presigning, so only note the key here; before-call records.
        context["lorabot_key"] = self._relative(str(params.get("Key", params.get("Prefix", ""))))

    def _record_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        with self._log_lock:
            self._log.append(RequestRecord(model.name, context.get("lorabot_key", "")))

    def request_log(self) -> builtins.list[RequestRecord]:
        with self._log_lock:
            return builtins.list(self._log)


class _Missing(Exception):
    """Internal: the object does not exist (turned into None or a clear error by the caller)."""


@contextlib.contextmanager
def _errors(operation: str, key: str) -> Iterator[None]:
    """Map botocore errors to ArtifactStoreError with the operation, key and S3 error code only."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "unknown"))
        if code in _MISSING_CODES:
            raise _Missing() from None
        message = str(error.get("Message", "")).strip()
        raise ArtifactStoreError(
            f"S3 {operation} of {key!r} failed: {code}" + (f" ({message})" if message else "")
        ) from None
    except (BotoCoreError, S3UploadFailedError) as exc:
        # These messages name the endpoint, bucket or file, never the credentials.
        raise ArtifactStoreError(f"S3 {operation} of {key!r} failed: {exc}") from None


def _copy_hashing(body: Any, sink: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink.write(chunk)
    finally:
        body.close()
    return digest.hexdigest(), size
