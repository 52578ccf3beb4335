"""Create task_run; its task_key still holds "<task key>:<dynamic key>" in one column.

Revision ID: b7e2d9a1c4f0
Revises: a3f1c2d4e5b6
Create Date: 2026-02-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "b7e2d9a1c4f0"
down_revision: str | None = "a3f1c2d4e5b6"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # creates a table only


def upgrade() -> None:
    op.create_table(
        "task_run",
        *h.base_columns(),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("task_key", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state_type", h.state_type(), nullable=True),
        sa.Column("state_name", sa.String(255), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_time", h.timestamp(), nullable=True),
        sa.Column("end_time", h.timestamp(), nullable=True),
        h.json_column("tags", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_task_run"),
        h.fk("task_run", "flow_run_id", "flow_run", "CASCADE"),
        sa.UniqueConstraint("flow_run_id", "task_key", name="uq_task_run__flow_run_id_task_key"),
    )
    op.create_index("ix_task_run__state_type_start_time", "task_run", ["state_type", "start_time"])


def downgrade() -> None:
    op.drop_table("task_run")
