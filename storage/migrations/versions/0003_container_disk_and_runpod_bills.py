"""Container disk is money too, and RunPod's own bill is kept beside the ledger.

- ``pods.container_disk_gb``: the disk asked for at intent time (RunPod bills $0.10/GB/month while the pod exists);
  rows from before this revision stay NULL, which the ledger counts as 0 GB (it did not bill disk then either).
- ``cost_items.disk_micros``: the part of a pod item's amount that is its container disk (0 for older items).
- ``runpod_bills``: RunPod's billing records per pod (``GET /v2/billing/pods``), ``runpod_bill_syncs``: how far
  fetching them got (attempts, last error, settled once the records reach the pod's end).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("pods", sa.Column("container_disk_gb", sa.Integer(), nullable=True))
    # server_default: the items already written get 0 (their amounts held no disk).
    op.add_column("cost_items", sa.Column("disk_micros", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "runpod_bills",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("start", _utc(), nullable=False),
        sa.Column("end", _utc(), nullable=False),
        sa.Column("gpu_micros", sa.BigInteger(), nullable=False),
        sa.Column("cpu_micros", sa.BigInteger(), nullable=False),
        sa.Column("disk_micros", sa.BigInteger(), nullable=False),
        sa.Column("total_micros", sa.BigInteger(), nullable=False),
        sa.Column("fetched_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name=op.f("fk_runpod_bills_pod_id_pods")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runpod_bills")),
        sa.UniqueConstraint("pod_id", "start", name=op.f("uq_runpod_bills_pod_id_start")),
    )
    op.create_index(op.f("ix_runpod_bills_pod_id"), "runpod_bills", ["pod_id"])
    op.create_table(
        "runpod_bill_syncs",
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", _utc(), nullable=False),
        sa.Column("settled_at", _utc(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name=op.f("fk_runpod_bill_syncs_pod_id_pods")),
        sa.PrimaryKeyConstraint("pod_id", name=op.f("pk_runpod_bill_syncs")),
    )


def downgrade() -> None:
    op.drop_table("runpod_bill_syncs")
    op.drop_index(op.f("ix_runpod_bills_pod_id"), table_name="runpod_bills")
    op.drop_table("runpod_bills")
    with op.batch_alter_table("cost_items") as batch:
        batch.drop_column("disk_micros")
    with op.batch_alter_table("pods") as batch:
        batch.drop_column("container_disk_gb")
