"""What only the S3 store does: multipart uploads, sha256 in object metadata, the key prefix inside the bucket,
R2-style configuration, presigned uploads bound to octet-stream, and credentials that never show."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from storage.artifacts import OCTET_STREAM, ArtifactStoreError
from storage.artifacts_s3 import S3ArtifactStore
from tests.storage._artifact_worlds import S3_ACCESS_KEY, S3_SECRET_KEY, s3_store
from tests.world.s3 import S3World, urllib_put


@pytest.fixture
def endpoint(s3_world: S3World) -> str:
    return s3_world.endpoint_url


@pytest.fixture
def bucket(s3_world: S3World) -> str:
    return s3_world.bucket


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


def test_endpoint_and_credentials_from_the_environment(s3_world: S3World) -> None:
    """The test world (and some operators) set AWS_ENDPOINT_URL_S3 and AWS_* keys instead of passing them."""
    store = S3ArtifactStore(s3_world.bucket, prefix="lorabot/")
    assert store.endpoint_url == s3_world.endpoint_url
    store.put_bytes("jobs/j1/manifest.json", b"{}")
    assert s3_world.read("lorabot/jobs/j1/manifest.json") == b"{}"
    assert "from environment" in repr(store)


def test_dataset_is_uploaded_once_by_the_servers_count(s3_world: S3World, tmp_path: Path) -> None:
    """Issue 9: the same zip twice is one object; moto's own request record shows one upload."""
    store = s3_store(s3_world.bucket, s3_world.endpoint_url)
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    zip_path = tmp_path / "dataset.zip"
    zip_path.write_bytes(data)

    assert store.put_dataset(sha, zip_path)[1] is True
    assert store.put_dataset(sha, zip_path)[1] is False
    assert store.put_dataset(sha, zip_path)[1] is False

    requests = list(s3_world.requests_for(f"lorabot/datasets/{sha}.zip"))
    assert [(r.method, r.content_length) for r in requests if r.method in ("PUT", "POST")] == [("PUT", len(data))]
    assert [r.method for r in requests].count("HEAD") == 3


def test_a_presigned_put_with_another_content_type_is_refused(s3_world: S3World) -> None:
    """Real S3 refuses a Content-Type other than the signed one; the world enforces it for registered URLs."""
    store = s3_store(s3_world.bucket, s3_world.endpoint_url)
    url = store.presign_put("jobs/j42/status/train.json", 600)
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    s3_world.server.signed_content_types[signature] = OCTET_STREAM

    wrong = urllib.request.Request(url, data=b"{}", method="PUT", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(wrong, timeout=10)
    caught.value.close()
    assert caught.value.code == 403
    assert urllib_put(url, b"{}") == 200
    assert store.get_bytes("jobs/j42/status/train.json") == b"{}"


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
