"""Add flow_run.expected_start_time (NOT NULL), backfilled from start_time or created.

Online data migration (``migrations/online.py``): the column is added nullable (with,
on PostgreSQL, a trigger that fills it for rows the running API writes meanwhile),
filled set-based in key-range batches of their own transactions, indexed without
blocking writes, proven NOT NULL by a validated check, and only then declared NOT NULL
(no scan under the strong lock). On SQLite the last phase fills rows written meanwhile
and rebuilds the table with the NOT NULL column. The scheduler asks for "runs due
before T", hence the index.

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
from flowdb.database.migrations.online import OnlineMigration, per_dialect

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
        sa.Index("ix_flow_run__expected_start_time", "expected_start_time"),
    )


FILL = "COALESCE(start_time, created)"
#: PostgreSQL: rows the running API inserts while the migration runs get their value at once.
FILL_NEW_ROWS = [
    "CREATE OR REPLACE FUNCTION flowdb_3d1a5e7b9f86_fill() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN IF NEW.expected_start_time IS NULL THEN "
    "NEW.expected_start_time := COALESCE(NEW.start_time, NEW.created); END IF; "
    "RETURN NEW; END $$",
    "DROP TRIGGER IF EXISTS flowdb_3d1a5e7b9f86_fill ON flow_run",
    "CREATE TRIGGER flowdb_3d1a5e7b9f86_fill BEFORE INSERT OR UPDATE ON flow_run "
    "FOR EACH ROW EXECUTE FUNCTION flowdb_3d1a5e7b9f86_fill()",
]
STOP_FILLING = [
    "DROP TRIGGER IF EXISTS flowdb_3d1a5e7b9f86_fill ON flow_run",
    "DROP FUNCTION IF EXISTS flowdb_3d1a5e7b9f86_fill()",
]
# Online: the data phases below run while the API serves; only metadata is changed under
# the strong lock (the lint gate checks the backfill is not in a DDL transaction).
SERVES_PREVIOUS_CODE = False  # NOT NULL: the previous code's inserts leave the column empty


def upgrade() -> None:
    online = OnlineMigration(revision)
    h.add_column_if_missing(
        "flow_run", sa.Column("expected_start_time", h.timestamp(), nullable=True)
    )
    for statement in per_dialect(postgresql=FILL_NEW_ROWS):
        op.execute(statement)
    online.backfill(
        "flow_run",
        f"UPDATE flow_run SET expected_start_time = {FILL} "
        "WHERE expected_start_time IS NULL AND {batch}",
    )
    online.create_index("ix_flow_run__expected_start_time", "flow_run", ["expected_start_time"])
    online.prove_not_null("flow_run", "expected_start_time")
    online.contract()
    if h.dialect().render_as_batch:  # SQLite: catch up, then rebuild with NOT NULL
        op.execute(
            f"UPDATE flow_run SET expected_start_time = {FILL} WHERE expected_start_time IS NULL"
        )
        with op.batch_alter_table("flow_run", copy_from=flow_run_with_nullable_column()) as batch:
            batch.alter_column("expected_start_time", existing_type=h.timestamp(), nullable=False)
    else:
        online.set_not_null("flow_run", "expected_start_time")
        for statement in per_dialect(postgresql=STOP_FILLING):
            op.execute(statement)
    online.finish()


def downgrade() -> None:
    op.drop_index("ix_flow_run__expected_start_time", table_name="flow_run")
    op.drop_column("flow_run", "expected_start_time")
