"""/try requests and test windows (issue 15, the orchestration side).

- ``try_requests``: each /try on a finished job (validated request, estimate, status, the pod that served it).
- ``test_windows``: a job's training GPU pod kept up after training to serve /try (opened/until/closed, by whom, its
  cost and the thread message that shows it); at most one per job.
- ``pods.keep_until``: a pod kept after its job finished is legitimate to the clean-up and the reaper until then.
- ``cost_items``: one item per pod *and kind* (was: per pod), so a training pod kept warm for the window has its
  GPU_POD line up to the window's opening and a TRY_GPU line after it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "try_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("spec_json", sa.JSON(), nullable=False),
        sa.Column("estimate_s", sa.Integer(), nullable=False),
        sa.Column("estimate_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pod_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_json", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_try_requests_job_id_jobs")),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name=op.f("fk_try_requests_pod_id_pods")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_try_requests")),
    )
    op.create_index(op.f("ix_try_requests_job_id"), "try_requests", ["job_id"], unique=False)
    op.create_index("ix_try_requests_status", "try_requests", ["status"], unique=False)
    op.create_table(
        "test_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=True),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.Text(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_test_windows_job_id_jobs")),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name=op.f("fk_test_windows_pod_id_pods")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_windows")),
        sa.UniqueConstraint("job_id", name=op.f("uq_test_windows_job_id")),
    )
    with op.batch_alter_table("pods") as batch:
        batch.add_column(sa.Column("keep_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("cost_items") as batch:
        batch.drop_constraint("uq_cost_items_pod_id", type_="unique")
        batch.create_unique_constraint("uq_cost_items_pod_id_kind", ["pod_id", "kind"])


def downgrade() -> None:
    # A pod with two items (window split) would break the old one-per-pod rule: its TRY_GPU item folds into none;
    # the downgrade is for development databases, where that loss is acceptable and said here.
    op.execute(
        "DELETE FROM cost_items WHERE kind = 'try_gpu' AND pod_id IN (SELECT pod_id FROM cost_items "
        "WHERE kind = 'gpu_pod' AND pod_id IS NOT NULL)"
    )
    with op.batch_alter_table("cost_items") as batch:
        batch.drop_constraint("uq_cost_items_pod_id_kind", type_="unique")
        batch.create_unique_constraint("uq_cost_items_pod_id", ["pod_id"])
    with op.batch_alter_table("pods") as batch:
        batch.drop_column("keep_until")
    op.drop_table("test_windows")
    op.drop_index("ix_try_requests_status", table_name="try_requests")
    op.drop_index(op.f("ix_try_requests_job_id"), table_name="try_requests")
    op.drop_table("try_requests")
