"""Network Volumes grown at RunPod: ``volume_resizes`` (from_gb, to_gb, resized_at) per volume, so the ledger bills
each hour of a volume at the size it had then (``volumes.size_gb`` is the size after the last resize).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volume_resizes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("volume_id", sa.Integer(), nullable=False),
        sa.Column("from_gb", sa.Integer(), nullable=False),
        sa.Column("to_gb", sa.Integer(), nullable=False),
        sa.Column("resized_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"], ["volumes.id"], name=op.f("fk_volume_resizes_volume_id_volumes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_resizes")),
    )
    op.create_index(op.f("ix_volume_resizes_volume_id"), "volume_resizes", ["volume_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_volume_resizes_volume_id"), table_name="volume_resizes")
    op.drop_table("volume_resizes")
