"""The settings pick the store: a bucket when S3_BUCKET is set, else the local folder behind the bot's URL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobs.config import load_settings
from storage.artifacts_factory import open_artifact_store, retention_policy
from storage.artifacts_local import LocalArtifactStore
from storage.artifacts_s3 import S3ArtifactStore
from tests.world.s3 import S3World

SECRET = b"0123456789abcdef0123456789abcdef"


def test_without_a_bucket_the_data_folder_is_served_at_the_public_url(tmp_path: Path) -> None:
    settings = load_settings(env={"LORABOT_DATA_DIR": str(tmp_path), "LORABOT_PUBLIC_URL": "https://bot.example.org/"})
    store = open_artifact_store(settings, SECRET)
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "artifacts"
    assert store.presign_get("jobs/j1/manifest.json", 60).startswith(
        "https://bot.example.org/artifacts/jobs/j1/manifest.json?"
    )


def test_without_a_public_url_links_use_the_listening_address(tmp_path: Path) -> None:
    settings = load_settings(env={"LORABOT_DATA_DIR": str(tmp_path), "LORABOT_HTTP_PORT": "9911"})
    store = open_artifact_store(settings, SECRET)
    assert store.public_link("jobs/j1/final/x.safetensors").startswith("http://127.0.0.1:9911/artifacts/")


def test_a_bucket_in_the_settings_gives_the_s3_store(s3_world: S3World, tmp_path: Path) -> None:
    settings = load_settings(
        env={
            "LORABOT_DATA_DIR": str(tmp_path),
            "S3_BUCKET": s3_world.bucket,
            "S3_ENDPOINT_URL": s3_world.endpoint_url,
            "S3_ACCESS_KEY_ID": "settings-key-id",
            "S3_SECRET_ACCESS_KEY": "settings-secret-value",
        }
    )
    store = open_artifact_store(settings, SECRET)
    assert isinstance(store, S3ArtifactStore)
    store.put_bytes("jobs/j1/manifest.json", b"{}")
    assert s3_world.read("lorabot/jobs/j1/manifest.json") == b"{}"
    assert "settings-secret-value" not in repr(store) and "settings-key-id" not in repr(store)


def test_region_auto_without_an_endpoint_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    settings = load_settings(env={"LORABOT_DATA_DIR": str(tmp_path), "S3_BUCKET": "b"})
    with pytest.raises(ValueError, match="needs its endpoint URL"):
        open_artifact_store(settings, SECRET)


def test_retention_policy_follows_the_setting(tmp_path: Path) -> None:
    settings = load_settings(env={"LORABOT_DATA_DIR": str(tmp_path), "S3_KEEP_EPOCH_CHECKPOINTS_DAYS": "3"})
    policy = retention_policy(settings, {"j1": {6}})
    assert policy.checkpoint_max_age == timedelta(days=3)
    assert policy.pinned_epochs == {"j1": {6}}
