"""Putting a planned job into the queue: the dataset into the store (once per content hash), a QUEUED row.

What the orchestrator needs later is frozen into the job's `plan_json` here (`JobPlan`), so a change of presets or
catalog after submission never changes a job that was already confirmed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from jobs.planning import Plan
from storage.artifacts import dataset_key
from storage.models import Job
from storage.queries import get_dataset, record_dataset
from storage.transitions import create_job


class DatasetStore(Protocol):
    def put_dataset(self, sha256: str, path: Path) -> tuple[Any, bool]: ...


@dataclass(frozen=True)
class ModelFileRef:
    url: str
    filename: str
    size: int | None
    sha256: str | None
    token_env: str | None
    # Flux's ae / clip_l / t5xxl beside the checkpoint (the plan's arguments name them on the volume).
    extra_files: tuple[ModelFileRef, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFileRef:
        fields = dict(data)
        fields["extra_files"] = tuple(cls.from_json(extra) for extra in fields.get("extra_files") or ())
        return cls(**fields)


@dataclass(frozen=True)
class JobPlan:
    """The part of a Plan the orchestrator runs from, as plain JSON-able data."""

    script: str
    args: list[str]
    files: dict[str, str]
    epochs: int
    sample_prompts: int
    output_name: str
    base_model: str
    model: ModelFileRef
    gpu_id: str
    estimate_micros: dict[str, int]
    total_steps: int
    training_seconds: int
    summary: str = ""
    # What the job needs on the volume (GB: environment, model, its outputs, headroom); 0 in plans made before.
    volume_gb: int = 0
    # Auto-captioning on the CPU pod (jobs.captions `CaptionPlan.job_settings`); None: nothing to tag.
    captions: dict[str, Any] | None = None
    # A /caption job: the CPU pod tags the dataset and the job ends there (PREPARING → SUCCEEDED); no GPU is rented.
    caption_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPlan:
        fields = dict(data)
        fields["model"] = ModelFileRef.from_json(fields["model"])
        return cls(**fields)


def job_plan_of(plan: Plan) -> JobPlan:
    spec = plan.spec
    model = plan.model.file
    return JobPlan(
        script=plan.script,
        args=list(plan.args),
        files={"dataset.toml": plan.dataset_toml, "sample_prompts.txt": plan.sample_prompts_text},
        epochs=spec.epochs,
        sample_prompts=len(spec.sample_prompts) if spec.sample_every_n_epochs else 0,
        output_name=spec.output_name,
        base_model=plan.model.id,
        model=ModelFileRef(
            model.url,
            model.filename,
            model.size,
            model.sha256,
            model.token_env,
            tuple(ModelFileRef(f.url, f.filename, f.size, f.sha256, f.token_env) for f in plan.model.extra_files),
        ),
        gpu_id=plan.gpu.gpu_id,
        estimate_micros={cost.cloud: cost.total_micros for cost in plan.estimate.costs},
        total_steps=plan.steps.total,
        training_seconds=plan.estimate.durations.train_s,
        volume_gb=plan.estimate.volume_gb,
        summary=f"{spec.preset} · {plan.model.name} · {spec.epochs} epochs · {plan.steps.total} steps",
        captions=plan.captions.job_settings(spec) if plan.captions is not None else None,
    )


def submit(
    session: Session,
    store: DatasetStore,
    *,
    plan: Plan,
    dataset_zip: Path,
    dataset_sha256: str,
    dataset_size: int,
    image_count: int,
    report: dict[str, Any],
    user_id: int,
    name: str,
    now: dt.datetime,
    guild_id: int | None = None,
    channel_id: int | None = None,
    wall_time: dt.timedelta | None = None,
    job_plan: JobPlan | None = None,
) -> Job:
    """Store the dataset (skipped when the same bytes are already there) and queue the job. `job_plan`: what the
    job runs when it is not the training plan itself (a /caption job: jobs/caption_job.py)."""
    if get_dataset(session, dataset_sha256) is None:
        store.put_dataset(dataset_sha256, dataset_zip)
        record_dataset(
            session,
            store_key=dataset_key(dataset_sha256),
            sha256=dataset_sha256,
            size=dataset_size,
            owner_user_id=user_id,
            image_count=image_count,
            report=report,
            now=now,
        )
    job_plan = job_plan or job_plan_of(plan)
    return create_job(
        session,
        user_id=user_id,
        name=name,
        output_name=job_plan.output_name,
        dataset_sha256=dataset_sha256,
        dataset_size=dataset_size,
        base_model=job_plan.base_model,
        now=now,
        guild_id=guild_id,
        channel_id=channel_id,
        spec=dataclasses.asdict(plan.spec),
        plan=job_plan.to_json(),
        estimate_micros=max(job_plan.estimate_micros.values()),
        deadline_at=now + wall_time if wall_time else None,
    )
