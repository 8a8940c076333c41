"""After the CPU pod captioned a job's dataset: keep the result like any other dataset and tell the thread.

The agent uploads the captioned zip to `jobs/<id>/captions/dataset.zip` (its hash is known only once it is made);
here it is stored under `datasets/<sha256>.zip` with a `datasets` row owned by the job's user, so `dataset_from`
(and a later retry) starts from the captioned data and tags nothing. The CAPTIONS notice carries what the thread
shows before training: tag frequencies, example captions, unreadable images and a link to the zip.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.manifest import JobKeys
from jobs.states import NoticeKind
from storage.artifacts import dataset_key
from storage.models import Notice
from storage.queries import record_dataset
from storage.transitions import add_notice

log = logging.getLogger(__name__)


class CaptionStore(Protocol):
    def download(self, key: str, path: Path) -> Any: ...

    def put_dataset(self, sha256: str, path: Path) -> Any: ...

    def presign_get(self, key: str, expires_s: int) -> str: ...


def captions_noticed(session: Session, job_id: int) -> bool:
    """The captioned dataset of this job is already stored and announced (the orchestrator ticks again and again)."""
    key = f"j{job_id}:captions"
    return session.scalar(select(Notice.id).where(Notice.idempotency_key == key)) is not None


def store_captioned(
    store: CaptionStore,
    session: Session,
    *,
    job_id: int,
    keys: JobKeys,
    owner_user_id: int,
    summary: dict[str, Any],
    link_lifetime_s: int,
    now: dt.datetime,
) -> bool:
    """Store the captioned dataset and queue the notice (once per job); False when the zip is not usable, which is
    logged and leaves training alone: the volume already holds the captioned data the GPU pod trains on."""
    sha = str(summary.get("sha256") or "")
    with tempfile.TemporaryDirectory(prefix="lorabot-captioned-") as tmp:
        path = Path(tmp) / "dataset.zip"
        try:
            store.download(keys.captioned_dataset, path)
            store.put_dataset(sha, path)
        except Exception:  # a missing or torn upload: the job trains anyway, only the stored copy is lost
            log.exception("j%s: the captioned dataset %s could not be stored", job_id, sha[:12])
            return False
    record_dataset(
        session,
        sha256=sha,
        size=int(summary.get("size") or 0),
        owner_user_id=owner_user_id,
        image_count=int(summary.get("images") or 0),
        report={"captions": {k: v for k, v in summary.items() if k != "examples"}},
        store_key=dataset_key(sha),
        now=now,
    )
    add_notice(
        session,
        job_id=job_id,
        kind=NoticeKind.CAPTIONS,
        key=f"j{job_id}:captions",
        payload={**summary, "url": store.presign_get(dataset_key(sha), link_lifetime_s)},
        now=now,
    )
    return True
