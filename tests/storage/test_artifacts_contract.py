"""The ArtifactStore contract, run against both stores: S3 (real boto3 against moto) and the local folder
(served over real HTTP by storage.http). A pod only ever sees presigned URLs, so those are exercised with stdlib
urllib exactly as the agent uses them."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.artifacts import (
    OCTET_STREAM,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLarge,
    InvalidKey,
    RetentionPolicy,
)
from tests.storage._artifact_worlds import s3_store, served_local_store

UPLOAD_OPERATIONS = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        with served_local_store(tmp_path / "store") as world:
            yield world.store
    else:
        world = request.getfixturevalue("s3_world")
        s3 = s3_store(world.bucket, world.endpoint_url)
        yield s3
        s3.close()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _urlopen(request: urllib.request.Request | str) -> bytes:
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def test_put_bytes_then_get_and_head_round_trip(store: ArtifactStore) -> None:
    """Bytes come back unchanged, and head() knows size and sha256 of what we wrote."""
    data = b'{"phase": "training", "seq": 3}'
    info = store.put_bytes("jobs/j42/status/train.json", data, "application/json")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("jobs/j42/status/train.json") == data
    head = store.head("jobs/j42/status/train.json")
    assert head is not None
    assert (head.key, head.size, head.sha256) == ("jobs/j42/status/train.json", len(data), info.sha256)
    assert head.last_modified is not None and head.last_modified.tzinfo is not None
    assert store.exists("jobs/j42/status/train.json")


def test_missing_objects_are_none_not_errors(store: ArtifactStore) -> None:
    """Polling a status that no pod wrote yet is normal: None/False, not an exception."""
    assert store.get_bytes("jobs/j1/status/train.json") is None
    assert store.head("jobs/j1/status/train.json") is None
    assert store.sha256_of("jobs/j1/status/train.json") is None
    assert not store.exists("jobs/j1/status/train.json")
    store.delete("jobs/j1/status/train.json")  # idempotent


def test_download_of_a_missing_object_says_which(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactStoreError, match=r"'jobs/j1/final/x.safetensors' does not exist"):
        store.download("jobs/j1/final/x.safetensors", tmp_path / "x.safetensors")
    assert list(tmp_path.glob("*.part")) == []


def test_get_bytes_refuses_big_objects(store: ArtifactStore) -> None:
    store.put_bytes("jobs/j1/logs/train.log", b"x" * 2000)
    with pytest.raises(ArtifactTooLarge, match="larger than 1000 bytes"):
        store.get_bytes("jobs/j1/logs/train.log", max_bytes=1000)


def test_put_file_download_and_streamed_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    """A file goes up and comes down byte for byte; download and sha256_of hash while streaming."""
    data = os.urandom(300_000)
    source = _write(tmp_path / "lora.safetensors", data)
    info = store.put_file("jobs/j42/final/kana.safetensors", source)
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    target = tmp_path / "out" / "kana.safetensors"
    got = store.download("jobs/j42/final/kana.safetensors", target)
    assert target.read_bytes() == data
    assert got.sha256 == info.sha256
    assert store.sha256_of("jobs/j42/final/kana.safetensors") == info.sha256
    assert [p.name for p in target.parent.iterdir()] == ["kana.safetensors"]  # no temp file left


def test_list_is_sorted_relative_and_prefix_bound(store: ArtifactStore) -> None:
    for key in ["jobs/j42/epochs/000002/s.png", "jobs/j42/epochs/000001/s.png", "jobs/j43/manifest.json"]:
        store.put_bytes(key, b"x")
    assert [i.key for i in store.list("jobs/j42/")] == [
        "jobs/j42/epochs/000001/s.png",
        "jobs/j42/epochs/000002/s.png",
    ]
    assert [i.key for i in store.list("jobs/j4")] == [
        "jobs/j42/epochs/000001/s.png",
        "jobs/j42/epochs/000002/s.png",
        "jobs/j43/manifest.json",
    ]
    assert store.list("nothing/") == []


def test_delete_prefix_removes_one_job_only(store: ArtifactStore) -> None:
    store.put_bytes("jobs/j42/manifest.json", b"{}")
    store.put_bytes("jobs/j42/status/train.json", b"{}")
    store.put_bytes("jobs/j420/manifest.json", b"{}")
    assert store.delete_prefix("jobs/j42/") == 2
    assert [i.key for i in store.list("jobs/")] == ["jobs/j420/manifest.json"]
    with pytest.raises(ValueError, match="non-empty prefix"):
        store.delete_prefix("")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../etc/passwd", r"'\.\.'"),
        ("jobs/../../x", r"'\.\.'"),
        ("/etc/passwd", "relative path"),
        ("jobs\\j1\\x", "relative path"),
        ("jobs/j1/\x00x", "control characters"),
        ("jobs/j1/a\nb", "control characters"),
        ("jobs//x", "empty or '.' segments"),
        ("jobs/./x", "empty or '.' segments"),
        ("", "non-empty"),
        ("jobs/j1/", "must not end with '/'"),
    ],
)
def test_unsafe_keys_are_refused_with_the_reason(store: ArtifactStore, key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.presign_put(key, 60)


def test_link_lifetime_is_checked(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="between 1 s and 604800 s"):
        store.presign_get("jobs/j1/final/x.safetensors", 8 * 24 * 3600)
    with pytest.raises(ValueError, match="between 1 s and 604800 s"):
        store.presign_put("jobs/j1/final/x.safetensors", 0)


def test_presigned_put_from_urllib_then_presigned_get(store: ArtifactStore) -> None:
    """What a pod does: PUT with Content-Type application/octet-stream, and the bot reads it back."""
    body = os.urandom(50_000)
    put_url = store.presign_put("jobs/j42/epochs/000001/kana-000001.safetensors", 600)
    request = urllib.request.Request(put_url, data=body, method="PUT", headers={"Content-Type": OCTET_STREAM})
    _urlopen(request)

    assert store.sha256_of("jobs/j42/epochs/000001/kana-000001.safetensors") == hashlib.sha256(body).hexdigest()
    get_url = store.presign_get("jobs/j42/epochs/000001/kana-000001.safetensors", 600)
    assert _urlopen(get_url) == body
    assert _urlopen(store.public_link("jobs/j42/epochs/000001/kana-000001.safetensors")) == body


def test_presigned_get_of_a_missing_object_is_404(store: ArtifactStore) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        _urlopen(store.presign_get("jobs/j42/manifest.json", 600))
    caught.value.close()
    assert caught.value.code == 404


def test_dataset_is_stored_once_by_content_hash(store: ArtifactStore, tmp_path: Path) -> None:
    """The same zip twice is one object, and the second put makes no upload request at all."""
    data = os.urandom(64_000)
    sha = hashlib.sha256(data).hexdigest()
    zip_path = _write(tmp_path / "dataset.zip", data)

    first, uploaded_first = store.put_dataset(sha, zip_path)
    uploads_after_first = [r for r in store.request_log() if r.operation in UPLOAD_OPERATIONS]
    second, uploaded_second = store.put_dataset(sha, zip_path)
    uploads_after_second = [r for r in store.request_log() if r.operation in UPLOAD_OPERATIONS]

    assert (uploaded_first, uploaded_second) == (True, False)
    assert first.key == second.key == f"datasets/{sha}.zip"
    assert second.size == len(data)
    assert uploads_after_first == uploads_after_second
    assert [r.key for r in uploads_after_first] == [f"datasets/{sha}.zip"]
    assert [i.key for i in store.list("datasets/")] == [f"datasets/{sha}.zip"]


def test_dataset_with_a_wrong_hash_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    zip_path = _write(tmp_path / "dataset.zip", b"zip bytes")
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(ValueError, match="not the declared"):
        store.put_dataset(wrong, zip_path)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.put_dataset("ABC", zip_path)
    assert store.list("datasets/") == []


def _put_job_outputs(store: ArtifactStore, job_id: str, epochs: range) -> None:
    for epoch in epochs:
        store.put_bytes(f"jobs/{job_id}/epochs/{epoch:06d}/kana-{epoch:06d}.safetensors", b"w" * 100)
        store.put_bytes(f"jobs/{job_id}/epochs/{epoch:06d}/sample-00.png", b"png")
    store.put_bytes(f"jobs/{job_id}/final/kana.safetensors", b"final")


def test_prune_keeps_chosen_epochs_samples_and_final(store: ArtifactStore) -> None:
    _put_job_outputs(store, "j42", range(1, 5))
    deleted = store.prune_epoch_checkpoints("jobs/j42", keep_epochs={2, 4})
    assert deleted == [
        "jobs/j42/epochs/000001/kana-000001.safetensors",
        "jobs/j42/epochs/000003/kana-000003.safetensors",
    ]
    left = {i.key for i in store.list("jobs/j42/")}
    assert "jobs/j42/final/kana.safetensors" in left
    assert "jobs/j42/epochs/000002/kana-000002.safetensors" in left
    assert {f"jobs/j42/epochs/{e:06d}/sample-00.png" for e in range(1, 5)} <= left


def test_cleanup_drops_old_unpinned_checkpoints_only(store: ArtifactStore) -> None:
    """Seed 001: storage grows fast. Old checkpoints go; the final LoRA and pinned epochs stay."""
    _put_job_outputs(store, "j1", range(1, 4))
    # "now" is measured against when the objects were written (moto: real time; local: the store's clock).
    written = store.head("jobs/j1/final/kana.safetensors")
    assert written is not None and written.last_modified is not None
    policy = RetentionPolicy(checkpoint_max_age=timedelta(days=14), pinned_epochs={"j1": {2}})

    too_early = store.cleanup_expired(written.last_modified + timedelta(days=13), policy)
    assert too_early.deleted_keys == []

    report = store.cleanup_expired(written.last_modified + timedelta(days=15), policy)
    assert report.deleted_keys == [
        "jobs/j1/epochs/000001/kana-000001.safetensors",
        "jobs/j1/epochs/000003/kana-000003.safetensors",
    ]
    assert (report.freed_bytes, report.kept_pinned) == (200, 1)
    assert store.exists("jobs/j1/final/kana.safetensors")
    assert store.exists("jobs/j1/epochs/000002/kana-000002.safetensors")
    assert store.exists("jobs/j1/epochs/000001/sample-00.png")


def test_cleanup_needs_an_aware_time(store: ArtifactStore) -> None:
    policy = RetentionPolicy(checkpoint_max_age=timedelta(days=1))
    with pytest.raises(ValueError, match="aware UTC"):
        store.cleanup_expired(datetime(2026, 1, 1), policy)  # a naive time is the mistake under test
    assert store.cleanup_expired(datetime(2026, 1, 1, tzinfo=UTC), policy).deleted_keys == []


def test_local_store_explains_a_key_that_collides_with_a_folder(tmp_path: Path) -> None:
    """S3 keys are flat; a folder store cannot hold both "a" and "a/b", and says so instead of half-writing."""
    with served_local_store(tmp_path / "store") as world:
        world.store.put_bytes("jobs/j1/final", b"x")
        with pytest.raises(ArtifactStoreError, match="collides with an existing key"):
            world.store.put_bytes("jobs/j1/final/kana.safetensors", b"y")
        assert list((tmp_path / "store" / "tmp").iterdir()) == []
        assert world.store.get_bytes("jobs/j1/final") == b"x"
