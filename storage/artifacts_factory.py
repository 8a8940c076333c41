"""Choose and build the artifact store from the settings: a bucket when `S3_BUCKET` is set, else the data folder
served by the bot's own aiohttp server (which then must be reachable by the pods at `LORABOT_PUBLIC_URL`)."""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import timedelta

from jobs.config import Settings
from storage.artifacts import ArtifactStore, RetentionPolicy
from storage.artifacts_local import LocalArtifactStore
from storage.artifacts_s3 import S3ArtifactStore


def open_artifact_store(settings: Settings, url_secret: bytes) -> ArtifactStore:
    """`url_secret` signs local URLs (unused with a bucket); the caller owns generating and keeping it."""
    s3 = settings.s3
    if s3.bucket:
        return S3ArtifactStore(
            s3.bucket,
            prefix=s3.prefix,
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key=s3.access_key_id.get_secret_value() if s3.access_key_id else None,
            secret_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
            link_lifetime_s=s3.link_lifetime_s,
        )
    return LocalArtifactStore(
        settings.data_dir / "artifacts",
        base_url=local_base_url(settings),
        secret=url_secret,
        link_lifetime_s=s3.link_lifetime_s,
    )


def local_base_url(settings: Settings) -> str:
    """The public URL when configured (pods on RunPod need it); the listening address is enough for the sandbox."""
    return settings.public_url or f"http://{settings.http_host}:{settings.http_port}"


def retention_policy(settings: Settings, pinned_epochs: Mapping[str, Set[int]]) -> RetentionPolicy:
    return RetentionPolicy(
        checkpoint_max_age=timedelta(days=settings.s3.keep_epoch_checkpoints_days), pinned_epochs=pinned_epochs
    )
