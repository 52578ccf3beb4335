"""Create flow and flow_run, and the state_type enum.

Revision ID: a3f1c2d4e5b6
Revises:
Create Date: 2026-01-05 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "a3f1c2d4e5b6"
down_revision: str | None = None
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # the first revision: there is no previous code


def upgrade() -> None:
    h.create_state_type_enum()
    op.create_table(
        "flow",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        h.json_column("tags", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_flow"),
        sa.UniqueConstraint("name", name="uq_flow__name"),
    )
    op.create_table(
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
        sa.PrimaryKeyConstraint("id", name="pk_flow_run"),
        h.fk("flow_run", "flow_id", "flow", "CASCADE"),
        sa.UniqueConstraint(
            "flow_id", "idempotency_key", name="uq_flow_run__flow_id_idempotency_key"
        ),
    )
    op.create_index("ix_flow_run__flow_id", "flow_run", ["flow_id"])
    op.create_index("ix_flow_run__state_type", "flow_run", ["state_type"])


def downgrade() -> None:
    op.drop_table("flow_run")
    op.drop_table("flow")
    h.drop_state_type_enum()
