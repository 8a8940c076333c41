"""The job store's tables as typed SQLAlchemy 2 models.

One row per job, per pod, per volume, per cost item and per outgoing Discord notice (the outbox). Money is integer
micro-dollars (``*_micros``); every timestamp is an aware UTC datetime (``UTCDateTime`` refuses naive ones).
``storage/migrations/versions`` must create exactly this schema (a test compares them).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from jobs.names import job_public_id
from jobs.states import CacheKind, CostKind, JobStatus, NoticeKind, PodRole, PodStatus, TryStatus

# Stable constraint names, so migrations can refer to them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones, so values are stored as naive UTC there; PostgreSQL gets ``timestamptz``.
    A naive datetime is refused: it is the classic way a local time sneaks into the ledger.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the job store: pass an aware UTC time")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    """Store an enum's *value* (``"failed_trainer"``) as a plain string; no native enum type to migrate."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    """A normalised dataset, content-addressed: the same bytes uploaded twice are one row and one object."""

    __tablename__ = "datasets"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    owner_user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    image_count: Mapped[int] = mapped_column(Integer)
    report_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Where the normalised zip lives in the artifact store (``datasets/<sha256>.zip``).
    store_key: Mapped[str] = mapped_column(String(512))


class Volume(Base):
    """A RunPod Network Volume lorabot created (one per data center) and the cache it holds."""

    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    runpod_volume_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    data_center_id: Mapped[str] = mapped_column(String(64), index=True)
    size_gb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class VolumeResize(Base):
    """A Network Volume grown at RunPod (``volumes.size_gb`` holds the size after the last one): the ledger bills
    each hour at the size the volume had then."""

    __tablename__ = "volume_resizes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"), index=True)
    from_gb: Mapped[int] = mapped_column(Integer)
    to_gb: Mapped[int] = mapped_column(Integer)
    resized_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class VolumeCacheEntry(Base):
    """One thing the agent finished on a volume (``COMPLETE`` marker): an env recipe, a base model, a dataset."""

    __tablename__ = "volume_cache"
    __table_args__ = (UniqueConstraint("volume_id", "kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"))
    kind: Mapped[CacheKind] = mapped_column(_enum(CacheKind, "cache_kind"))
    # The env recipe hash, the model file name, or the dataset sha256.
    key: Mapped[str] = mapped_column(String(255))
    ready_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """One training job. Its status changes only through ``storage.transitions.transition``."""

    __tablename__ = "jobs"
    # AUTOINCREMENT: SQLite would otherwise reuse the id of a deleted last row, and with it the public id and
    # the bucket prefix ``jobs/j42/`` of an older job.
    __table_args__ = (
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_user_id_status", "user_id", "status"),
        Index("ix_jobs_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    # The job's Discord thread, known once the bot created it.
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    # sd-scripts' ``--output_name``: file names of the LoRA and its epochs.
    output_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    # Human-readable cause of a FAILED_* status (no secrets: it is shown in the thread).
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # Bumped by every transition; part of the notices' idempotency keys and a compare-and-set handle.
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    spec_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plan_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_sha256: Mapped[str] = mapped_column(String(64), index=True)
    dataset_size: Mapped[int] = mapped_column(BigInteger)
    base_model: Mapped[str] = mapped_column(String(255))
    data_center_id: Mapped[str | None] = mapped_column(String(64))
    volume_id: Mapped[int | None] = mapped_column(ForeignKey("volumes.id"))
    # Hash of the environment recipe (keys the volume cache).
    env_hash: Mapped[str | None] = mapped_column(String(64))
    # False for a warm job: the volume already holds what the CPU stage would build.
    cpu_needed: Mapped[bool | None] = mapped_column(Boolean)
    # The GPU offer in use (seed 000's fallback: community 4090 → secure 4090 → other 24 GB GPUs).
    gpu_type_id: Mapped[str | None] = mapped_column(String(128))
    gpu_cloud_type: Mapped[str | None] = mapped_column(String(16))
    gpu_spot: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_bid_micros_per_hour: Mapped[int | None] = mapped_column(BigInteger)
    # GPU pods started so far (a resume after an interruption is a new attempt).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Past this wall time the reaper stops the job (FAILED_TIMEOUT).
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The highest agent status ``seq`` already acted on (status objects are re-read every tick).
    last_status_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_epoch_notified: Mapped[int] = mapped_column(Integer, default=0)
    # The most this job may spend (None: only the monthly budgets apply).
    budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    # The plan's cost estimate; budgets reserve it while the job runs.
    estimate_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The epoch its owner (or an admin) chose as the result ("Use epoch N"); None: the final LoRA (last epoch).
    # The retention never deletes this epoch's checkpoint.
    picked_epoch: Mapped[int | None] = mapped_column(Integer)
    picked_by_user_id: Mapped[int | None] = mapped_column(BigInteger)
    picked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The thread's contact-sheet messages, one per sheet in order: refreshed by editing them, never re-posted.
    contact_sheet_message_ids: Mapped[list[int] | None] = mapped_column(JSON)

    @property
    def public_id(self) -> str:
        return job_public_id(self.id)


class Pod(Base):
    """A pod lorabot asked RunPod for. The row is written *before* the API call, so no pod ever goes unrecorded."""

    __tablename__ = "pods"
    __table_args__ = (
        UniqueConstraint("job_id", "role", "attempt"),
        Index("ix_pods_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    role: Mapped[PodRole] = mapped_column(_enum(PodRole, "pod_role"))
    # Deterministic ``lorabot-<job>-cpu|gpu[-N]``: looked up at RunPod before any create.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    attempt: Mapped[int] = mapped_column(Integer)
    # Null until the API answers.
    runpod_pod_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[PodStatus] = mapped_column(_enum(PodStatus, "pod_status"), default=PodStatus.CREATING)
    gpu_type_id: Mapped[str | None] = mapped_column(String(128))
    cloud_type: Mapped[str | None] = mapped_column(String(16))
    spot: Mapped[bool] = mapped_column(Boolean, default=False)
    # RunPod's ``costPerHr`` for this pod, known once it was created.
    cost_per_hr_micros: Mapped[int | None] = mapped_column(BigInteger)
    data_center_id: Mapped[str | None] = mapped_column(String(64))
    # When lorabot decided to create it (before the API call).
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Just before the create call went out: a pod found by name after a crash was billed from about then.
    create_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When RunPod created it: billing starts here.
    api_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    terminate_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When RunPod confirmed it gone (or we learnt it was): billing ends here.
    terminated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # RunPod's ``uptimeSeconds`` at the last look, to cross-check our billed seconds.
    uptime_seconds_api: Mapped[int | None] = mapped_column(Integer)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str | None] = mapped_column(Text)
    # The container disk asked for (RunPod bills it while the pod exists); None on rows from before 0003 = 0 GB.
    container_disk_gb: Mapped[int | None] = mapped_column(Integer)
    # A pod kept after its job finished (a /try pod lingering for the next request, the test window's pod): until
    # this moment it is legitimate to the clean-up and the reaper; None for the pods of running jobs.
    keep_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CostItem(Base):
    """A closed (``final``) or provisional charge to a job: one per pod, and the job's volume hours."""

    __tablename__ = "cost_items"
    # One cost item per pod and kind: a training pod kept warm for the test window has a GPU_POD item up to the
    # window's opening and a TRY_GPU item after it (NULL pod_ids, i.e. volume items, do not collide).
    __table_args__ = (
        UniqueConstraint("pod_id", "kind"),
        Index("ix_cost_items_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pods.id"))
    kind: Mapped[CostKind] = mapped_column(_enum(CostKind, "cost_kind"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The compute rate; a pod's container disk is billed on top of it (``disk_micros``).
    rate_micros_per_hour: Mapped[int] = mapped_column(BigInteger)
    # The whole charge: a pod item's compute plus its container disk.
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    # The part of ``amount_micros`` that is the pod's container disk (0 for volume items and rows before 0003).
    disk_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    final: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str | None] = mapped_column(Text)


class TryRequest(Base):
    """One /try on a finished job: the validated request, its estimate, and where it is (``TryStatus``; moved only
    through ``storage.tries.set_try_status``). Its public id ``t<id>`` names it in the bucket and in requests.json."""

    __tablename__ = "try_requests"
    __table_args__ = (Index("ix_try_requests_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    # Who asked (the owner or an admin), and where the estimate was shown.
    user_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[TryStatus] = mapped_column(_enum(TryStatus, "try_status"), default=TryStatus.PENDING)
    # The validated request (prompts, epochs, seed, negative, strength, steps, compare), as jobs/tryplan.py made it.
    spec_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the user confirmed: GPU start-up (0 on a warm pod) plus generation, and its price.
    estimate_s: Mapped[int] = mapped_column(Integer, default=0)
    estimate_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When it went into requests.json (RUNNING), and when it ended.
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The pod that served it (a TRY pod, or the window's training pod).
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pods.id"))
    # Why it failed or was cancelled (shown in the thread; no secrets).
    error: Mapped[str | None] = mapped_column(Text)
    # The agent's last status for it (cells done, seconds) and the cells' bucket keys once done.
    result_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    @property
    def public_id(self) -> str:
        return f"t{self.id}"


class TestWindow(Base):
    """The test window of a job: its training GPU pod kept up after training, serving /try, until ``until_at`` or
    until closed ("Close now", /cancel, a restart that found it expired). At most one per job."""

    __tablename__ = "test_windows"
    __test__ = False  # not a pytest test class, whatever its name

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pods.id"))
    minutes: Mapped[int] = mapped_column(Integer)
    # When training ended and the window began: the pod's time after it is billed on the TRY_GPU line.
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    until_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # "time", "button by <user id>", "cancel by <name>", "restart", "pod lost"...
    closed_by: Mapped[str | None] = mapped_column(Text)
    # The window's cost once its pod is gone (the TRY_GPU item of its pod).
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    # The thread message that shows it, edited in place.
    message_id: Mapped[int | None] = mapped_column(BigInteger)


class RunpodBill(Base):
    """One of RunPod's own billing records for one of our pods (``GET /v2/billing/pods``, hourly buckets), kept
    beside the ledger so the two can be compared. A later fetch replaces a pod's records: RunPod's lag fills them in."""

    __tablename__ = "runpod_bills"
    __table_args__ = (UniqueConstraint("pod_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pod_id: Mapped[int] = mapped_column(ForeignKey("pods.id"), index=True)
    start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    gpu_micros: Mapped[int] = mapped_column(BigInteger)
    cpu_micros: Mapped[int] = mapped_column(BigInteger)
    disk_micros: Mapped[int] = mapped_column(BigInteger)
    total_micros: Mapped[int] = mapped_column(BigInteger)
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RunpodBillSync(Base):
    """Where fetching a finished pod's bill stands: how often it was asked for, and whether it is complete."""

    __tablename__ = "runpod_bill_syncs"

    pod_id: Mapped[int] = mapped_column(ForeignKey("pods.id"), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Set once RunPod's records reach the pod's end; no more fetches after that.
    settled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The last failed fetch (no secrets: CloudError texts never carry the API key).
    last_error: Mapped[str | None] = mapped_column(Text)


class Notice(Base):
    """The outbox: a message for a job's thread, written in the same transaction as the change it announces."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_sent_at_next_attempt_at", "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Null for notices about no job in particular (the reaper's reports).
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[NoticeKind] = mapped_column(_enum(NoticeKind, "notice_kind"))
    # Deterministic (``j42:7:succeeded``, ``j42:epoch:3``): the same notice can never be queued twice.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    discord_message_id: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)


class Budget(Base):
    """A monthly spending limit for one user or for the whole team."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("subject", "month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # ``"team"`` or a Discord user id in decimal (``"123456789012345678"``); see ``budget_subject``.
    subject: Mapped[str] = mapped_column(String(32))
    # ``YYYY-MM`` (UTC), or ``"*"`` for the limit of every month without its own row.
    month: Mapped[str] = mapped_column(String(7))
    limit_micros: Mapped[int] = mapped_column(BigInteger)


TEAM_SUBJECT = "team"


def budget_subject(user_id: int | None) -> str:
    """The ``budgets.subject`` of a user, or of the team when ``user_id`` is None."""
    return TEAM_SUBJECT if user_id is None else str(user_id)


class Lease(Base):
    """Who may act on the jobs: one row per lease (``orchestrator``), held by one bot process until it expires.

    The holder renews it every tick; a process that stops renewing (killed, hung, cut off from the database) loses
    it once ``expires_at`` passes, and the next process that asks takes it. See ``storage.lease``.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # ``host:pid:random`` of the process holding it (a restarted process is a new holder).
    holder: Mapped[str] = mapped_column(String(200))
    # When this holder took it (kept across renewals), and until when it holds it without renewing.
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
