"""sweeps and workers: a sweep's record, its runs, the cluster worker that ran each run, and
who runs a queued run (a `training sweep` process, or the training service)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("dataset_name", sa.String(length=500), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=250), nullable=False),
        sa.Column("goal", sa.String(length=8), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("goal IN ('max', 'min')", name=op.f("ck_sweeps_goal_valid")),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_sweeps_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sweeps_created_at_id"), ["created_at", "id"], unique=False
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_sweep_id_sweeps"), "sweeps", ["sweep_id"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_runs_sweep_id"), ["sweep_id"], unique=False)


def downgrade() -> None:
    # The runs of a sweep stay, as ordinary runs; the sweep's own record goes.
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_sweep_id"))
        batch_op.drop_constraint(batch_op.f("fk_runs_sweep_id_sweeps"), type_="foreignkey")
        batch_op.drop_column("owner")
        batch_op.drop_column("sweep_id")
        batch_op.drop_column("worker")
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweeps_created_at_id"))
    op.drop_table("sweeps")
