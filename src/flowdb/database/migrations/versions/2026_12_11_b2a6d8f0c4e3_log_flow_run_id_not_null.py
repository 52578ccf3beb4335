"""Declare log.flow_run_id NOT NULL and drop the trigger that filled it (contract).

The second half of a1f5c7e9b3d2, which filled flow_run_id from the line's task run
and kept the previous release's lines filled by a trigger. The previous release may
still store a line with neither run, so this runs only once no replica of it serves
(``database/fleet.py``); ``preconditions`` refuses the upgrade, before anything
changes, while such lines exist.

PostgreSQL: a catch-up batch pass, then ``CHECK (flow_run_id IS NOT NULL) NOT VALID``
and ``VALIDATE`` (no strong lock while it scans), then ``SET NOT NULL`` (no scan: the
validated check proves it) and the check dropped. MariaDB/MySQL: ``MODIFY`` with
NOT NULL, which InnoDB does as an online table rebuild (writes go on; it takes the
table's metadata lock briefly at its start and end). SQLite: a table rebuild (a copy of
``log`` under the write lock, not batched: rows written during a batched copy would
need another set of triggers), which is why this is a contract revision.

The downgrade drops NOT NULL (SQLite: a rebuild again) and restores the trigger.

Revision ID: b2a6d8f0c4e3
Revises: a1f5c7e9b3d2
Create Date: 2026-12-11 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "b2a6d8f0c4e3"
down_revision: str | None = "a1f5c7e9b3d2"
branch_labels = None
depends_on = None

PHASE = "contract"  # NOT NULL: the previous release may store a line with neither run
SERVES_PREVIOUS_CODE = False

#: The expand revision's trigger, as it created it (a revision file stands alone).
_NAME = "flowdb_a1f5c7e9b3d2"
_OWNER = "(SELECT task_run.flow_run_id FROM task_run WHERE task_run.id = {row}.task_run_id)"
FILL_NEW_LINES = {
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {_NAME}_fill() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.flow_run_id IS NULL AND NEW.task_run_id IS NOT NULL THEN "
        f"NEW.flow_run_id := {_OWNER.format(row='NEW')}; END IF; RETURN NEW; END $$",
        f"DROP TRIGGER IF EXISTS {_NAME}_fill ON log",
        f"CREATE TRIGGER {_NAME}_fill BEFORE INSERT OR UPDATE ON log "
        f"FOR EACH ROW EXECUTE FUNCTION {_NAME}_fill()",
    ],
    "mysql": [
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_fill BEFORE INSERT ON log FOR EACH ROW "
        f"SET NEW.flow_run_id = COALESCE(NEW.flow_run_id, {_OWNER.format(row='NEW')})",
    ],
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_fill AFTER INSERT ON log "
        "WHEN NEW.flow_run_id IS NULL AND NEW.task_run_id IS NOT NULL BEGIN "
        f"UPDATE log SET flow_run_id = {_OWNER.format(row='NEW')} WHERE id = NEW.id; END",
    ],
}
STOP_FILLING = {
    "postgresql": [
        f"DROP TRIGGER IF EXISTS {_NAME}_fill ON log",
        f"DROP FUNCTION IF EXISTS {_NAME}_fill()",
    ],
    "mysql": [f"DROP TRIGGER IF EXISTS {_NAME}_fill"],
    "sqlite": [f"DROP TRIGGER IF EXISTS {_NAME}_fill"],
}
#: SQLite would answer "flow_run_id IS NULL" from ix_log__flow_run_id_timestamp in
#: every batch; the unary ``+`` (SQLite only) keeps it on the batch's key range.
EMPTY = {
    "sqlite": "+flow_run_id IS NULL AND +task_run_id IS NOT NULL",
    "other": "flow_run_id IS NULL AND task_run_id IS NOT NULL",
}


def log_table(*, flow_run_id_nullable: bool) -> sa.Table:
    """log as 9e3f5a7b2d46 left it, with flow_run_id nullable or not (SQLite's rebuilds)."""
    return h.frozen_table(
        "log",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=flow_run_id_nullable),
        sa.Column("task_run_id", sa.Uuid(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("timestamp", h.timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log"),
        h.fk("log", "flow_run_id", "flow_run", "CASCADE"),
        h.fk("log", "task_run_id", "task_run", "CASCADE"),
        sa.Index("ix_log__flow_run_id_timestamp", "flow_run_id", "timestamp"),
        sa.Index("ix_log__task_run_id_timestamp", "task_run_id", "timestamp"),
    )


def upgrade() -> None:
    online = OnlineMigration(revision)
    # Lines stored between the expand's backfill and its trigger's creation cannot exist
    # (the trigger came first), but a pass in batches costs little and proves it.
    [empty] = per_dialect(sqlite=[EMPTY["sqlite"]]) or [EMPTY["other"]]
    online.backfill(
        "log",
        f"UPDATE log SET flow_run_id = {_OWNER.format(row='log')} WHERE {empty} AND {{batch}}",
    )
    online.prove_not_null("log", "flow_run_id")
    online.contract()
    for statement in per_dialect(**STOP_FILLING, mariadb=STOP_FILLING["mysql"]):
        op.execute(statement)
    if h.dialect().features.render_as_batch:  # SQLite: a rebuild with the NOT NULL column
        with op.batch_alter_table("log", copy_from=log_table(flow_run_id_nullable=True)) as batch:
            batch.alter_column("flow_run_id", existing_type=sa.Uuid(), nullable=False)
    else:
        online.set_not_null("log", "flow_run_id")
    online.finish()


def downgrade() -> None:
    if h.dialect().features.render_as_batch:
        with op.batch_alter_table("log", copy_from=log_table(flow_run_id_nullable=False)) as batch:
            batch.alter_column("flow_run_id", existing_type=sa.Uuid(), nullable=True)
    elif h.dialect().features.deferred_validation:  # PostgreSQL
        op.execute("ALTER TABLE log ALTER COLUMN flow_run_id DROP NOT NULL")
    elif op.get_context().as_sql:  # MySQL offline: the type is read from the live database
        op.execute("-- log.flow_run_id: MODIFY with its current type, NULL")
    else:  # MySQL: MODIFY with the column's own type (MariaDB's uuid, MySQL's CHAR(32))
        column_type = (
            op.get_bind()
            .execute(
                sa.text(
                    "SELECT column_type FROM information_schema.columns WHERE table_schema = "
                    "DATABASE() AND table_name = 'log' AND column_name = 'flow_run_id'"
                )
            )
            .scalar()
        )
        op.execute(f"ALTER TABLE log MODIFY flow_run_id {column_type} NULL")
    for statement in per_dialect(**FILL_NEW_LINES, mariadb=FILL_NEW_LINES["mysql"]):
        op.execute(statement)
