"""Create work_pool, work_queue and worker; link deployments and flow runs to queues.

Expand-only and online (``migrations/online.py``): deployment and flow_run get their new
column, foreign key and index without a strong lock held while a table is scanned.

Revision ID: e9b3c7d5f2a4
Revises: d2a6f4b8c1e3
Create Date: 2026-04-14 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration

revision: str = "e9b3c7d5f2a4"
down_revision: str | None = "d2a6f4b8c1e3"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # new tables and new nullable columns


def flow_run_before() -> sa.Table:
    """flow_run as revision d2a6f4b8c1e3 left it."""
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
        sa.PrimaryKeyConstraint("id", name="pk_flow_run"),
        h.fk("flow_run", "flow_id", "flow", "CASCADE"),
        h.fk("flow_run", "deployment_id", "deployment", "SET NULL"),
        sa.UniqueConstraint(
            "flow_id", "idempotency_key", name="uq_flow_run__flow_id_idempotency_key"
        ),
        sa.Index("ix_flow_run__flow_id", "flow_id"),
        sa.Index("ix_flow_run__state_type", "state_type"),
        sa.Index("ix_flow_run__deployment_id", "deployment_id"),
    )


def deployment_before() -> sa.Table:
    """deployment as revision d2a6f4b8c1e3 created it."""
    return h.frozen_table(
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
        sa.Index("ix_deployment__flow_id", "flow_id"),
    )


def _with_work_queue_link(table: sa.Table) -> sa.Table:
    table.append_column(sa.Column("work_queue_id", sa.Uuid(), nullable=True))
    table.append_constraint(h.fk(table.name, "work_queue_id", "work_queue", "SET NULL"))
    sa.Index(f"ix_{table.name}__work_queue_id", table.c.work_queue_id)
    return table


def upgrade() -> None:
    online = OnlineMigration(revision)
    # Else an interrupted run made the tables (MySQL: rerun, done parts are skipped).
    if h.dialect().ddl_commits or not h.has_table("work_pool"):
        create_tables()
    for table in (deployment_before(), flow_run_before()):
        online.add_reference(table, "work_queue_id", "work_queue", "SET NULL")
    online.contract()
    online.finish()


def create_tables() -> None:
    """work_pool, work_queue and worker, with their indexes."""
    op.create_table(
        "work_pool",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        h.json_column("base_job_template", default="{}"),
        sa.PrimaryKeyConstraint("id", name="pk_work_pool"),
        sa.UniqueConstraint("name", name="uq_work_pool__name"),
    )
    op.create_table(
        "work_queue",
        *h.base_columns(),
        sa.Column("work_pool_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_work_queue"),
        h.fk("work_queue", "work_pool_id", "work_pool", "CASCADE"),
        sa.UniqueConstraint("work_pool_id", "name", name="uq_work_queue__work_pool_id_name"),
    )
    op.create_index("ix_work_queue__work_pool_id", "work_queue", ["work_pool_id"])
    op.create_table(
        "worker",
        *h.base_columns(),
        sa.Column("work_pool_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("last_heartbeat_time", h.timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_worker"),
        h.fk("worker", "work_pool_id", "work_pool", "CASCADE"),
        sa.UniqueConstraint("work_pool_id", "name", name="uq_worker__work_pool_id_name"),
    )
    op.create_index("ix_worker__work_pool_id", "worker", ["work_pool_id"])


def downgrade() -> None:
    for before in (flow_run_before(), deployment_before()):
        after = _with_work_queue_link(before)
        with op.batch_alter_table(after.name, copy_from=after) as batch:
            batch.drop_constraint(f"fk_{after.name}__work_queue_id__work_queue", type_="foreignkey")
            batch.drop_index(f"ix_{after.name}__work_queue_id")
            batch.drop_column("work_queue_id")
    op.drop_table("worker")
    op.drop_table("work_queue")
    op.drop_table("work_pool")
