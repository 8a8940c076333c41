"""Initial schema: jobs, pods, volumes and their cache, cost items, the notices outbox, datasets, budgets.

Written out in full (not imported from ``storage.models``) so this revision keeps creating the same tables while
the models move on; ``tests/storage/test_migrations.py`` checks that models and migrations agree.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUSES = (
    "queued", "preparing", "training", "interrupted", "collecting", "cancelling", "succeeded", "cancelled",
    "failed_dataset", "failed_no_capacity", "failed_trainer", "failed_budget", "failed_timeout", "failed_internal",
)  # fmt: skip
POD_STATUSES = ("creating", "running", "exited", "terminating", "terminated", "lost")
NOTICE_KINDS = ("plan", "preparing", "waiting_gpu", "epoch", "succeeded", "failed", "cancelled", "interrupted", "info")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    # Stored as VARCHAR(32) of the enum's values; no native enum type, so adding a value needs no DDL.
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("limit_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint("subject", "month", name=op.f("uq_budgets_subject_month")),
    )
    op.create_table(
        "datasets",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("owner_user_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("report_json", sa.JSON(), nullable=False),
        sa.Column("store_key", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_datasets")),
    )
    op.create_index(op.f("ix_datasets_owner_user_id"), "datasets", ["owner_user_id"])
    op.create_table(
        "volumes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("runpod_volume_id", sa.String(length=64), nullable=True),
        sa.Column("data_center_id", sa.String(length=64), nullable=False),
        sa.Column("size_gb", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("deleted_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volumes")),
        sa.UniqueConstraint("runpod_volume_id", name=op.f("uq_volumes_runpod_volume_id")),
    )
    op.create_index(op.f("ix_volumes_data_center_id"), "volumes", ["data_center_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("output_name", sa.String(length=100), nullable=False),
        sa.Column("status", _enum("job_status", *JOB_STATUSES), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("spec_json", sa.JSON(), nullable=False),
        sa.Column("plan_json", sa.JSON(), nullable=False),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=False),
        sa.Column("dataset_size", sa.BigInteger(), nullable=False),
        sa.Column("base_model", sa.String(length=255), nullable=False),
        sa.Column("data_center_id", sa.String(length=64), nullable=True),
        sa.Column("volume_id", sa.Integer(), nullable=True),
        sa.Column("env_hash", sa.String(length=64), nullable=True),
        sa.Column("cpu_needed", sa.Boolean(), nullable=True),
        sa.Column("gpu_type_id", sa.String(length=128), nullable=True),
        sa.Column("gpu_cloud_type", sa.String(length=16), nullable=True),
        sa.Column("gpu_spot", sa.Boolean(), nullable=False),
        sa.Column("gpu_bid_micros_per_hour", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("queued_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("deadline_at", _utc(), nullable=True),
        sa.Column("last_status_seq", sa.Integer(), nullable=False),
        sa.Column("last_epoch_notified", sa.Integer(), nullable=False),
        sa.Column("budget_micros", sa.BigInteger(), nullable=True),
        sa.Column("estimate_micros", sa.BigInteger(), nullable=False),
        sa.Column("cancel_requested_at", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["volume_id"], ["volumes.id"], name=op.f("fk_jobs_volume_id_volumes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        # Never reuse a deleted job's id (it is the public id and the bucket prefix).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_user_id_status", "jobs", ["user_id", "status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index(op.f("ix_jobs_dataset_sha256"), "jobs", ["dataset_sha256"])
    op.create_table(
        "volume_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("volume_id", sa.Integer(), nullable=False),
        sa.Column("kind", _enum("cache_kind", "env", "model", "dataset"), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("ready_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"], ["volumes.id"], name=op.f("fk_volume_cache_volume_id_volumes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_cache")),
        sa.UniqueConstraint("volume_id", "kind", "key", name=op.f("uq_volume_cache_volume_id_kind_key")),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("kind", _enum("notice_kind", *NOTICE_KINDS), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("payload_json", sa.JSON(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _utc(), nullable=True),
        sa.Column("discord_message_id", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_notices_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_notices_idempotency_key")),
    )
    op.create_index(op.f("ix_notices_job_id"), "notices", ["job_id"])
    op.create_index("ix_notices_sent_at_next_attempt_at", "notices", ["sent_at", "next_attempt_at"])
    op.create_table(
        "pods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("role", _enum("pod_role", "cpu", "gpu"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("runpod_pod_id", sa.String(length=64), nullable=True),
        sa.Column("status", _enum("pod_status", *POD_STATUSES), nullable=False),
        sa.Column("gpu_type_id", sa.String(length=128), nullable=True),
        sa.Column("cloud_type", sa.String(length=16), nullable=True),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("cost_per_hr_micros", sa.BigInteger(), nullable=True),
        sa.Column("data_center_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("api_created_at", _utc(), nullable=True),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("terminate_requested_at", _utc(), nullable=True),
        sa.Column("terminated_at", _utc(), nullable=True),
        sa.Column("uptime_seconds_api", sa.Integer(), nullable=True),
        sa.Column("last_seen_at", _utc(), nullable=True),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_pods_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pods")),
        sa.UniqueConstraint("job_id", "role", "attempt", name=op.f("uq_pods_job_id_role_attempt")),
        sa.UniqueConstraint("name", name=op.f("uq_pods_name")),
        sa.UniqueConstraint("runpod_pod_id", name=op.f("uq_pods_runpod_pod_id")),
    )
    op.create_index(op.f("ix_pods_job_id"), "pods", ["job_id"])
    op.create_index("ix_pods_status", "pods", ["status"])
    op.create_table(
        "cost_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=True),
        sa.Column("kind", _enum("cost_kind", "cpu_pod", "gpu_pod", "volume", "storage"), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("ended_at", _utc(), nullable=False),
        sa.Column("rate_micros_per_hour", sa.BigInteger(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_cost_items_job_id_jobs")),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name=op.f("fk_cost_items_pod_id_pods")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_items")),
        sa.UniqueConstraint("pod_id", name=op.f("uq_cost_items_pod_id")),
    )
    op.create_index(op.f("ix_cost_items_job_id"), "cost_items", ["job_id"])
    op.create_index("ix_cost_items_started_at", "cost_items", ["started_at"])


def downgrade() -> None:
    for table in ("cost_items", "pods", "notices", "volume_cache", "jobs", "volumes", "datasets", "budgets"):
        op.drop_table(table)
