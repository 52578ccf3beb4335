"""Create deployment (with one schedule document per deployment) and link flow runs to it.

Expand-only and online (``migrations/online.py``): flow_run gets its new column, foreign
key and index without a strong lock held while the table is scanned.

Revision ID: d2a6f4b8c1e3
Revises: c5d8e3f2a9b1
Create Date: 2026-03-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration

revision: str = "d2a6f4b8c1e3"
down_revision: str | None = "c5d8e3f2a9b1"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # a new table and a new nullable column


def flow_run_before() -> sa.Table:
    """flow_run as revision a3f1c2d4e5b6 created it."""
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
        sa.PrimaryKeyConstraint("id", name="pk_flow_run"),
        h.fk("flow_run", "flow_id", "flow", "CASCADE"),
        sa.UniqueConstraint(
            "flow_id", "idempotency_key", name="uq_flow_run__flow_id_idempotency_key"
        ),
        sa.Index("ix_flow_run__flow_id", "flow_id"),
        sa.Index("ix_flow_run__state_type", "state_type"),
    )


def upgrade() -> None:
    online = OnlineMigration(revision)
    # An interrupted run made it (where DDL commits by itself, rerun it all: done parts skip).
    if h.has_table("deployment") and not h.dialect().ddl_commits:
        online.add_reference(flow_run_before(), "deployment_id", "deployment", "SET NULL")
        online.contract()
        online.finish()
        return
    op.create_table(
        "deployment",
        *h.base_columns(),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.String(255), nullable=True),
        h.json_column("parameters", default="{}"),
        h.json_column("tags", default="[]"),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        h.json_column("schedule", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deployment"),
        h.fk("deployment", "flow_id", "flow", "CASCADE"),
        sa.UniqueConstraint("flow_id", "name", name="uq_deployment__flow_id_name"),
    )
    op.create_index("ix_deployment__flow_id", "deployment", ["flow_id"])
    online.add_reference(flow_run_before(), "deployment_id", "deployment", "SET NULL")
    online.contract()
    online.finish()


def downgrade() -> None:
    after = flow_run_before()
    after.append_column(sa.Column("deployment_id", sa.Uuid(), nullable=True))
    after.append_constraint(h.fk("flow_run", "deployment_id", "deployment", "SET NULL"))
    sa.Index("ix_flow_run__deployment_id", after.c.deployment_id)
    with op.batch_alter_table("flow_run", copy_from=after) as batch:
        batch.drop_constraint("fk_flow_run__deployment_id__deployment", type_="foreignkey")
        batch.drop_index("ix_flow_run__deployment_id")
        batch.drop_column("deployment_id")
    op.drop_table("deployment")
