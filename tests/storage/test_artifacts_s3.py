"""What only the S3 store does: multipart uploads, sha256 in object metadata, the key prefix inside the bucket,
R2-style configuration, presigned uploads bound to octet-stream, and credentials that never show."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from storage.artifacts import OCTET_STREAM, ArtifactStoreError
from storage.artifacts_s3 import S3ArtifactStore
from tests.storage._artifact_worlds import S3_ACCESS_KEY, S3_SECRET_KEY, moto_url, new_bucket, s3_store


@pytest.fixture
def endpoint() -> str:
    return moto_url()


@pytest.fixture
def bucket(endpoint: str) -> str:
    return new_bucket(endpoint)


def _raw_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )


def test_big_files_go_up_in_parts_and_keep_their_sha256(endpoint: str, bucket: str, tmp_path: Path) -> None:
    """A checkpoint above the multipart threshold is uploaded in 5 MiB parts, and head() still knows its hash."""
    store = s3_store(bucket, endpoint)
    data = os.urandom(11 * 1024 * 1024)
    source = tmp_path / "kana-000001.safetensors"
    source.write_bytes(data)

    info = store.put_file("jobs/j42/epochs/000001/kana-000001.safetensors", source)

    operations = [r.operation for r in store.request_log()]
    assert operations.count("CreateMultipartUpload") == 1
    assert operations.count("UploadPart") == 3
    assert operations.count("CompleteMultipartUpload") == 1
    assert "PutObject" not in operations
    head = store.head("jobs/j42/epochs/000001/kana-000001.safetensors")
    assert head is not None
    assert (head.size, head.sha256) == (len(data), hashlib.sha256(data).hexdigest()) == (info.size, info.sha256)
    assert store.sha256_of("jobs/j42/epochs/000001/kana-000001.safetensors") == info.sha256


def test_a_pods_presigned_upload_has_no_recorded_hash_so_we_stream_it(endpoint: str, bucket: str) -> None:
    """Pods upload without metadata; verifying their final LoRA means hashing the stored bytes."""
    store = s3_store(bucket, endpoint)
    body = b"final lora bytes"
    request = urllib.request.Request(
        store.presign_put("jobs/j42/final/kana.safetensors", 60),
        data=body,
        method="PUT",
        headers={"Content-Type": OCTET_STREAM},
    )
    urllib.request.urlopen(request, timeout=10).close()
    head = store.head("jobs/j42/final/kana.safetensors")
    assert head is not None and (head.size, head.sha256) == (len(body), None)
    assert store.sha256_of("jobs/j42/final/kana.safetensors") == hashlib.sha256(body).hexdigest()


def test_presigned_put_signs_the_content_type(endpoint: str, bucket: str) -> None:
    """moto does not check signatures, so check the URL: real S3/R2 refuse any other Content-Type."""
    url = s3_store(bucket, endpoint).presign_put("jobs/j42/status/train.json", 600)
    query = parse_qs(urlsplit(url).query)
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Expires"] == ["600"]


def test_keys_live_under_the_prefix_and_come_back_relative(endpoint: str, bucket: str) -> None:
    store = s3_store(bucket, endpoint, prefix="team-a/lorabot")
    other = s3_store(bucket, endpoint, prefix="team-b")
    store.put_bytes("jobs/j1/manifest.json", b"{}")
    raw_keys = [item["Key"] for item in _raw_client(endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert raw_keys == ["team-a/lorabot/jobs/j1/manifest.json"]
    assert [i.key for i in store.list()] == ["jobs/j1/manifest.json"]
    assert other.list() == []
    assert other.get_bytes("jobs/j1/manifest.json") is None


def test_r2_style_settings_work(endpoint: str, bucket: str) -> None:
    """R2: an account endpoint URL and region "auto"."""
    store = s3_store(bucket, endpoint, region="auto")
    store.put_bytes("jobs/j1/status/prepare.json", b'{"phase": "ready"}')
    assert store.get_bytes("jobs/j1/status/prepare.json") == b'{"phase": "ready"}'


def test_endpoint_from_the_environment(endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test world (and some operators) set AWS_ENDPOINT_URL_S3 instead of passing the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    store = s3_store(bucket, None)
    assert store.endpoint_url == endpoint
    store.put_bytes("jobs/j1/manifest.json", b"{}")
    assert store.exists("jobs/j1/manifest.json")


def test_credentials_never_show(endpoint: str, bucket: str) -> None:
    """Not in repr, and not in the error of a failed call."""
    store = s3_store(bucket, endpoint)
    missing_bucket = s3_store("no-such-bucket-here", endpoint)
    with pytest.raises(ArtifactStoreError) as caught:
        missing_bucket.put_bytes("jobs/j1/manifest.json", b"{}")
    with pytest.raises(ArtifactStoreError) as listed:
        missing_bucket.list("jobs/")
    texts = [repr(store), str(caught.value), str(listed.value)]
    for text in texts:
        assert S3_SECRET_KEY not in text
        assert S3_ACCESS_KEY not in text
    assert "NoSuchBucket" in str(caught.value)
    assert "'jobs/j1/manifest.json'" in str(caught.value)
    assert "<redacted>" in repr(store)


def test_unreachable_endpoint_is_a_clear_store_error(tmp_path: Path) -> None:
    store = S3ArtifactStore(
        "bucket",
        endpoint_url="http://127.0.0.1:9",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        max_attempts=1,  # fail fast: the retry policy is boto3's, not under test
    )
    with pytest.raises(ArtifactStoreError, match=re.escape("S3 head of 'jobs/j1/manifest.json' failed")) as caught:
        store.exists("jobs/j1/manifest.json")
    assert S3_SECRET_KEY not in str(caught.value)


def test_half_given_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="both the S3 access key and the secret key"):
        S3ArtifactStore("bucket", access_key=S3_ACCESS_KEY)
    with pytest.raises(ValueError, match="bucket name must not be empty"):
        S3ArtifactStore("")
