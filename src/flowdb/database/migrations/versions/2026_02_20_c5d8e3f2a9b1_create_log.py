"""Create log, indexed for "logs of a run, in time order".

Revision ID: c5d8e3f2a9b1
Revises: b7e2d9a1c4f0
Create Date: 2026-02-20 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "c5d8e3f2a9b1"
down_revision: str | None = "b7e2d9a1c4f0"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # creates a table only


def upgrade() -> None:
    op.create_table(
        "log",
        *h.base_columns(),
        sa.Column("logger", sa.String(255), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("task_run_id", sa.Uuid(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("timestamp", h.timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log"),
        h.fk("log", "flow_run_id", "flow_run", "CASCADE"),
        h.fk("log", "task_run_id", "task_run", "CASCADE"),
    )
    op.create_index("ix_log__flow_run_id_timestamp", "log", ["flow_run_id", "timestamp"])
    op.create_index("ix_log__task_run_id_timestamp", "log", ["task_run_id", "timestamp"])


def downgrade() -> None:
    op.drop_table("log")
