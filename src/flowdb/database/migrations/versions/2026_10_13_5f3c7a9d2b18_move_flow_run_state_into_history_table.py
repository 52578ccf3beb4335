"""Keep every flow run state in flow_run_state; flow_run points at its current one.

Data migration. Each run's current state (type, name, timestamp, message) moves into
a new flow_run_state row whose id is the run's own id (unique, and no join is needed
to link them), and flow_run.state_id points at it. state_type, state_name and
state_timestamp stay on flow_run, denormalised for filtering; state_message lives
only in the history from now on. A state without a name is named after its type.
The downgrade copies each run's current state message back onto flow_run.

Online data migration (``migrations/online.py``): the new table, flow_run.state_id and
a trigger that keeps the history row of every run the running API writes meanwhile up
to date come first; then the runs are copied in key-range batches of their own
transactions, flow_run.state_id is indexed without blocking writes, its foreign key is
added unchecked and validated (PostgreSQL); the last phase only drops state_message
and the trigger (on SQLite it rebuilds flow_run with the foreign key). The previous
code cannot keep serving: it writes state_message, which is dropped.

Revision ID: 5f3c7a9d2b18
Revises: 4e2b6f8c1a97
Create Date: 2026-10-13 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "5f3c7a9d2b18"
down_revision: str | None = "4e2b6f8c1a97"
branch_labels = None
depends_on = None

STATE_FK = "fk_flow_run__state_id__flow_run_state"


def flow_run(*extra: object) -> sa.Table:
    """flow_run as revision 3d1a5e7b9f86 left it, without state_message, plus ``extra``."""
    return h.frozen_table(
        "flow_run",
        *h.base_columns(),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("state_type", h.state_type(), nullable=True),
        sa.Column("state_name", sa.String(255), nullable=True),
        sa.Column("state_timestamp", h.timestamp(), nullable=True),
        h.json_column("parameters", default="{}"),
        h.json_column("tags", default="[]"),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_time", h.timestamp(), nullable=True),
        sa.Column("end_time", h.timestamp(), nullable=True),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("work_queue_id", sa.Uuid(), nullable=True),
        sa.Column("expected_start_time", h.timestamp(), nullable=False),
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
        *extra,
    )


SERVES_PREVIOUS_CODE = False  # drops flow_run.state_message, which the previous code writes

HISTORY_ROW = (
    "INSERT INTO flow_run_state (id, created, updated, flow_run_id, type, name, timestamp, "
    "message) VALUES (NEW.id, NEW.created, NEW.updated, NEW.id, NEW.state_type, "
    "COALESCE(NEW.state_name, CAST(NEW.state_type AS VARCHAR(255))), "
    "COALESCE(NEW.state_timestamp, NEW.updated), NEW.state_message) "
    "ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name, "
    "timestamp = excluded.timestamp, message = excluded.message, updated = excluded.updated"
)
POINT_AT_IT = "UPDATE flow_run SET state_id = NEW.id WHERE id = NEW.id AND state_id IS NULL"
STATE_COLUMNS = "state_type, state_name, state_timestamp, state_message"
#: Runs the running API writes while the migration runs keep their history row current.
KEEP_HISTORY = {
    "postgresql": [
        "CREATE OR REPLACE FUNCTION flowdb_5f3c7a9d2b18_history() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN {HISTORY_ROW}; {POINT_AT_IT}; RETURN NULL; END $$",
        "DROP TRIGGER IF EXISTS flowdb_5f3c7a9d2b18_history ON flow_run",
        "CREATE TRIGGER flowdb_5f3c7a9d2b18_history "
        f"AFTER INSERT OR UPDATE OF {STATE_COLUMNS} ON flow_run FOR EACH ROW "
        "WHEN (NEW.state_type IS NOT NULL) EXECUTE FUNCTION flowdb_5f3c7a9d2b18_history()",
    ],
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS flowdb_5f3c7a9d2b18_history_insert AFTER INSERT ON "
        f"flow_run WHEN NEW.state_type IS NOT NULL BEGIN {HISTORY_ROW}; {POINT_AT_IT}; END",
        "CREATE TRIGGER IF NOT EXISTS flowdb_5f3c7a9d2b18_history_update AFTER UPDATE OF "
        f"{STATE_COLUMNS} ON flow_run WHEN NEW.state_type IS NOT NULL "
        f"BEGIN {HISTORY_ROW}; {POINT_AT_IT}; END",
    ],
}
STOP_KEEPING_HISTORY = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS flowdb_5f3c7a9d2b18_history ON flow_run",
        "DROP FUNCTION IF EXISTS flowdb_5f3c7a9d2b18_history()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS flowdb_5f3c7a9d2b18_history_insert",
        "DROP TRIGGER IF EXISTS flowdb_5f3c7a9d2b18_history_update",
    ],
}


def upgrade() -> None:
    online = OnlineMigration(revision)
    if h.dialect().ddl_commits or not h.has_table("flow_run_state"):
        op.create_table(
            "flow_run_state",
            *h.base_columns(),
            sa.Column("flow_run_id", sa.Uuid(), nullable=False),
            sa.Column("type", h.state_type(), nullable=False),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("timestamp", h.timestamp(), server_default=h.NOW, nullable=False),
            sa.Column("message", sa.Text(), nullable=True),
            h.json_column("data", nullable=True),
            sa.PrimaryKeyConstraint("id", name="pk_flow_run_state"),
            h.fk("flow_run_state", "flow_run_id", "flow_run", "CASCADE"),
        )
        op.create_index(
            "ix_flow_run_state__flow_run_id_timestamp",
            "flow_run_state",
            ["flow_run_id", "timestamp"],
        )
    h.add_column_if_missing("flow_run", sa.Column("state_id", sa.Uuid(), nullable=True))
    for statement in per_dialect(**KEEP_HISTORY):
        op.execute(statement)
    online.backfill(
        "flow_run",
        "INSERT INTO flow_run_state (id, created, updated, flow_run_id, type, name, timestamp, "
        "message) SELECT id, created, updated, id, state_type, "
        "COALESCE(state_name, CAST(state_type AS VARCHAR(255))), "
        "COALESCE(state_timestamp, updated), state_message "
        "FROM flow_run WHERE state_type IS NOT NULL AND state_id IS NULL AND {batch}",
        "UPDATE flow_run SET state_id = id "
        "WHERE state_type IS NOT NULL AND state_id IS NULL AND {batch}",
    )
    online.create_index("ix_flow_run__state_id", "flow_run", ["state_id"])
    if not h.dialect().render_as_batch:  # SQLite: the foreign key comes with the rebuild
        online.add_foreign_key(STATE_FK, "flow_run", "state_id", "flow_run_state", "SET NULL")
    online.contract()
    for statement in per_dialect(**STOP_KEEPING_HISTORY):
        op.execute(statement)
    before = flow_run(
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("state_id", sa.Uuid(), nullable=True),
        sa.Index("ix_flow_run__state_id", "state_id"),
    )
    with op.batch_alter_table("flow_run", copy_from=before) as batch:
        batch.drop_column("state_message")
        if h.dialect().render_as_batch:  # SQLite: the foreign key comes with the rebuild
            batch.create_foreign_key(
                STATE_FK, "flow_run_state", ["state_id"], ["id"], ondelete="SET NULL"
            )
    online.finish()


def downgrade() -> None:
    op.add_column("flow_run", sa.Column("state_message", sa.Text(), nullable=True))
    if h.still_needed(lambda: h.has_column("flow_run", "state_id")):
        h.execute_in_batches(
            "flow_run",
            "UPDATE flow_run SET state_message = (SELECT s.message FROM flow_run_state s "
            "WHERE s.id = flow_run.state_id) WHERE state_id IS NOT NULL AND {batch}",
        )
    after = flow_run(
        sa.Column("state_id", sa.Uuid(), nullable=True),
        h.fk("flow_run", "state_id", "flow_run_state", "SET NULL", name=STATE_FK),
        sa.Index("ix_flow_run__state_id", "state_id"),
        sa.Column("state_message", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("flow_run", copy_from=after) as batch:
        batch.drop_constraint(STATE_FK, type_="foreignkey")
        batch.drop_index("ix_flow_run__state_id")
        batch.drop_column("state_id")
    op.drop_table("flow_run_state")
