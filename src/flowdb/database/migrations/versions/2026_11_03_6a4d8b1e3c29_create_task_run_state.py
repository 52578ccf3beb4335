"""Create task_run_state, the state history of task runs, and task_run.state_id.

Expand-only and online (``migrations/online.py``): task_run gets its new column,
foreign key and index without a strong lock held while the table is scanned.

Revision ID: 6a4d8b1e3c29
Revises: 5f3c7a9d2b18
Create Date: 2026-11-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration

revision: str = "6a4d8b1e3c29"
down_revision: str | None = "5f3c7a9d2b18"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # a new table and a new nullable column

STATE_FK = "fk_task_run__state_id__task_run_state"


def task_run(*extra: object) -> sa.Table:
    """task_run as revision 4e2b6f8c1a97 left it, plus ``extra``."""
    return h.frozen_table(
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
        sa.Column("dynamic_key", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_task_run"),
        h.fk("task_run", "flow_run_id", "flow_run", "CASCADE"),
        sa.UniqueConstraint(
            "flow_run_id",
            "task_key",
            "dynamic_key",
            name="uq_task_run__flow_run_id_task_key_dynamic_key",
        ),
        sa.Index("ix_task_run__state_type_start_time", "state_type", "start_time"),
        *extra,
    )


def upgrade() -> None:
    online = OnlineMigration(revision)
    # Else an interrupted run made it (MySQL: rerun, done parts are skipped).
    if h.dialect().ddl_commits or not h.has_table("task_run_state"):
        create_table()
    online.add_reference(task_run(), "state_id", "task_run_state", "SET NULL")
    online.contract()
    online.finish()


def create_table() -> None:
    """task_run_state and its index."""
    op.create_table(
        "task_run_state",
        *h.base_columns(),
        sa.Column("task_run_id", sa.Uuid(), nullable=False),
        sa.Column("type", h.state_type(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("timestamp", h.timestamp(), server_default=h.NOW, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        h.json_column("data", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_task_run_state"),
        h.fk("task_run_state", "task_run_id", "task_run", "CASCADE"),
    )
    op.create_index(
        "ix_task_run_state__task_run_id_timestamp", "task_run_state", ["task_run_id", "timestamp"]
    )


def downgrade() -> None:
    after = task_run(
        sa.Column("state_id", sa.Uuid(), nullable=True),
        h.fk("task_run", "state_id", "task_run_state", "SET NULL", name=STATE_FK),
        sa.Index("ix_task_run__state_id", "state_id"),
    )
    with op.batch_alter_table("task_run", copy_from=after) as batch:
        batch.drop_constraint(STATE_FK, type_="foreignkey")
        batch.drop_index("ix_task_run__state_id")
        batch.drop_column("state_id")
    op.drop_table("task_run_state")
