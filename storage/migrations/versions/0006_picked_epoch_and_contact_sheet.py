"""The epoch a user picked as the job's result, and where the job's contact sheets are in its thread.

- ``jobs.picked_epoch`` / ``picked_by_user_id`` / ``picked_at``: "Use epoch N" on the final message (NULL: the
  final LoRA, i.e. the last epoch, is the result, as before this revision).
- ``jobs.contact_sheet_message_ids``: the Discord messages holding the job's contact sheets, one per sheet, so a
  refresh edits them (also after a restart) instead of posting new ones.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("picked_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("picked_by_user_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("picked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("contact_sheet_message_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("contact_sheet_message_ids")
        batch.drop_column("picked_at")
        batch.drop_column("picked_by_user_id")
        batch.drop_column("picked_epoch")
