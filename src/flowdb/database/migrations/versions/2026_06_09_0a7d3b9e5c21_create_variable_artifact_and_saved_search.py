"""Create variable, artifact and saved_search.

Revision ID: 0a7d3b9e5c21
Revises: f4c8a2e6b9d7
Create Date: 2026-06-09 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "0a7d3b9e5c21"
down_revision: str | None = "f4c8a2e6b9d7"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # creates tables only


def upgrade() -> None:
    op.create_table(
        "variable",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        h.json_column("value", nullable=True),
        h.json_column("tags", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_variable"),
        sa.UniqueConstraint("name", name="uq_variable__name"),
    )
    op.create_table(
        "artifact",
        *h.base_columns(),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("type", sa.String(255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        h.json_column("data", nullable=True),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("task_run_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_artifact"),
        h.fk("artifact", "flow_run_id", "flow_run", "SET NULL"),
        h.fk("artifact", "task_run_id", "task_run", "SET NULL"),
    )
    op.create_index("ix_artifact__key", "artifact", ["key"])
    op.create_index("ix_artifact__flow_run_id", "artifact", ["flow_run_id"])
    op.create_index("ix_artifact__task_run_id", "artifact", ["task_run_id"])
    op.create_table(
        "saved_search",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        h.json_column("filters", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_saved_search"),
        sa.UniqueConstraint("name", name="uq_saved_search__name"),
    )


def downgrade() -> None:
    op.drop_table("saved_search")
    op.drop_table("artifact")
    op.drop_table("variable")
