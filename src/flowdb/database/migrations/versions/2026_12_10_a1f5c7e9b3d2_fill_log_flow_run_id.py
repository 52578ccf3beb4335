"""Fill log.flow_run_id from the line's task run; keep the previous release's lines filled (expand).

The first half of making log.flow_run_id NOT NULL. A log line is a line of a flow run
(``LogCreate``'s own description) but the previous release stores a line sent with a
task run only with flow_run_id NULL, so ``GET /api/logs?flow_run_id=`` misses it. This
release fills it from the task run on every write. This expand revision keeps the
previous release serving: a trigger fills flow_run_id from task_run for every line it
inserts without one, and the lines already stored are filled in key-range batches of
their own transactions (restartable, with progress). The contract revision b2a6d8f0c4e3
declares the column NOT NULL once no replica of the previous release serves.

Triggers: PostgreSQL, one BEFORE INSERT OR UPDATE function; MariaDB/MySQL, a BEFORE
INSERT trigger; SQLite (no BEFORE trigger can change a row), an AFTER INSERT trigger
that updates the new row. Nothing here rebuilds a table on SQLite.

The downgrade drops the triggers and leaves the filled values: the previous schema
allowed them, and each names the flow run the line's task run belongs to.

Revision ID: a1f5c7e9b3d2
Revises: 9e3f5a7b2d46
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

from alembic import op

from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "a1f5c7e9b3d2"
down_revision: str | None = "9e3f5a7b2d46"
branch_labels = None
depends_on = None

PHASE = "expand"  # a trigger and a backfill: the previous release keeps serving
SERVES_PREVIOUS_CODE = True

_NAME = "flowdb_a1f5c7e9b3d2"
_OWNER = "(SELECT task_run.flow_run_id FROM task_run WHERE task_run.id = {row}.task_run_id)"
#: Fill flow_run_id of the lines the previous release writes with a task run only.
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
#: The lines a batch fills. SQLite would answer "flow_run_id IS NULL" from
#: ix_log__flow_run_id_timestamp, reading every empty line in every batch; the unary
#: ``+`` (SQLite only) keeps it on the batch's key range.
EMPTY = {
    "sqlite": "+flow_run_id IS NULL AND +task_run_id IS NOT NULL",
    "other": "flow_run_id IS NULL AND task_run_id IS NOT NULL",
}
STOP_FILLING = {
    "postgresql": [
        f"DROP TRIGGER IF EXISTS {_NAME}_fill ON log",
        f"DROP FUNCTION IF EXISTS {_NAME}_fill()",
    ],
    "mysql": [f"DROP TRIGGER IF EXISTS {_NAME}_fill"],
    "sqlite": [f"DROP TRIGGER IF EXISTS {_NAME}_fill"],
}


def upgrade() -> None:
    online = OnlineMigration(revision)
    for statement in per_dialect(**FILL_NEW_LINES, mariadb=FILL_NEW_LINES["mysql"]):
        op.execute(statement)
    [empty] = per_dialect(sqlite=[EMPTY["sqlite"]]) or [EMPTY["other"]]
    online.backfill(
        "log",
        f"UPDATE log SET flow_run_id = {_OWNER.format(row='log')} WHERE {empty} AND {{batch}}",
    )
    online.contract()  # nothing needs a strong lock: only the version is recorded
    online.finish()


def downgrade() -> None:
    for statement in per_dialect(**STOP_FILLING, mariadb=STOP_FILLING["mysql"]):
        op.execute(statement)
