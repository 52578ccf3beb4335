"""Add flow_run.expected_start_time (NOT NULL), backfilled from start_time or created.

Data migration: the column is added nullable, filled set-based in key-range batches,
then made NOT NULL and indexed (the scheduler asks for "runs due before T").
The downgrade drops the column: the older schema has no place for it, and every value
was derived from columns that stay.

Revision ID: 3d1a5e7b9f86
Revises: 2c9f4d1a8e65
Create Date: 2026-09-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "3d1a5e7b9f86"
down_revision: str | None = "2c9f4d1a8e65"
branch_labels = None
depends_on = None


def flow_run_with_nullable_column() -> sa.Table:
    """flow_run as revision 2c9f4d1a8e65 left it, plus the new column, still nullable."""
    return h.frozen_table(
        "flow_run",
        *h.base_columns(),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("state_type", h.state_type(), nullable=True),
        sa.Column("state_name", sa.String(255), nullable=True),
        sa.Column("state_timestamp", h.timestamp(), nullable=True),
        sa.Column("state_message", sa.Text(), nullable=True),
        h.json_column("parameters", default="{}"),
        h.json_column("tags", default="[]"),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_time", h.timestamp(), nullable=True),
        sa.Column("end_time", h.timestamp(), nullable=True),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("work_queue_id", sa.Uuid(), nullable=True),
        sa.Column("expected_start_time", h.timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_flow_run"),
        h.fk("flow_run", "flow_id", "flow", "CASCADE"),
        h.fk("flow_run", "deployment_id", "deployment", "SET NULL"),
        h.fk("flow_run", "work_queue_id", "work_queue", "SET NULL"),
        sa.UniqueConstraint(
            "flow_id", "idempotency_key", name="uq_flow_run__flow_id_idempotency_key"
        ),
        sa.Index("ix_flow_run__deployment_id", "deployment_id"),
        sa.Index("ix_flow_run__work_queue_id", "work_queue_id"),
        sa.Index("ix_flow_run__flow_id_start_time", "flow_id", "start_time"),
        sa.Index("ix_flow_run__state_type_start_time", "state_type", "start_time"),
    )


def upgrade() -> None:
    op.add_column("flow_run", sa.Column("expected_start_time", h.timestamp(), nullable=True))
    h.execute_in_batches(
        "flow_run",
        "UPDATE flow_run SET expected_start_time = COALESCE(start_time, created) WHERE {batch}",
    )
    with op.batch_alter_table("flow_run", copy_from=flow_run_with_nullable_column()) as batch:
        batch.alter_column("expected_start_time", existing_type=h.timestamp(), nullable=False)
        batch.create_index("ix_flow_run__expected_start_time", ["expected_start_time"])


def downgrade() -> None:
    op.drop_index("ix_flow_run__expected_start_time", table_name="flow_run")
    op.drop_column("flow_run", "expected_start_time")
