"""queued runs: the QUEUED status, the submitted request and its time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')"
NEW = "status IN ('QUEUED', 'RUNNING', 'FINISHED', 'FAILED', 'KILLED')"


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submitted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("request", sa.JSON(), nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_runs_status_valid"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_runs_status_valid"), NEW)
    # Runs recorded before the queue existed were submitted when they started.
    op.execute("UPDATE runs SET submitted_at = start_time WHERE submitted_at IS NULL")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column("submitted_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_index(
            batch_op.f("ix_runs_status_submitted_at"), ["status", "submitted_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_runs_submitted_at_id"), ["submitted_at", "id"], unique=False
        )


def downgrade() -> None:
    # The old schema cannot hold a waiting run: it ends as KILLED, saying why.
    op.execute(
        "UPDATE runs SET status = 'KILLED', end_time = submitted_at, "
        "error = 'still queued when the run store was downgraded' WHERE status = 'QUEUED'"
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_submitted_at_id"))
        batch_op.drop_index(batch_op.f("ix_runs_status_submitted_at"))
        batch_op.drop_constraint(batch_op.f("ck_runs_status_valid"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_runs_status_valid"), OLD)
        batch_op.drop_column("request")
        batch_op.drop_column("submitted_at")
