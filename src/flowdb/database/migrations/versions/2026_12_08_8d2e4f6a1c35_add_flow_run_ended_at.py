"""Add flow_run.ended_at beside end_time; both releases' writes kept in step (expand).

The first half of renaming flow_run.end_time to ended_at, the name every other moment
of a run will follow (``<event>_at``). This expand revision keeps the previous release
working: it adds the nullable column ended_at, triggers that keep end_time and ended_at
equal whichever release writes (the previous one writes end_time, this one ended_at),
copies end_time into ended_at in key-range batches of their own transactions, and
indexes ended_at online as 8c6f0a3e5b41 indexed end_time (retention walks runs by it). The
contract revision 9e3f5a7b2d46 drops end_time and the triggers once no replica of the
previous release serves.

Triggers: PostgreSQL, one BEFORE INSERT OR UPDATE function; MariaDB/MySQL, BEFORE
INSERT and BEFORE UPDATE triggers that set both columns; SQLite (no BEFORE trigger can
change a row), AFTER INSERT and AFTER UPDATE OF each column, which update the row's
other column. On an update, the column that changed wins.

Revision ID: 8d2e4f6a1c35
Revises: 8c6f0a3e5b41
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "8d2e4f6a1c35"
down_revision: str | None = "8c6f0a3e5b41"
branch_labels = None
depends_on = None

PHASE = "expand"  # adds a nullable column and triggers: the previous release keeps serving
SERVES_PREVIOUS_CODE = True

_NAME = "flowdb_8d2e4f6a1c35"
#: Keep end_time (the previous release's) and ended_at (this release's) equal.
KEEP_IN_STEP = {
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {_NAME}_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF TG_OP = 'INSERT' THEN "
        "NEW.ended_at := COALESCE(NEW.ended_at, NEW.end_time); "
        "NEW.end_time := COALESCE(NEW.end_time, NEW.ended_at); "
        "ELSIF NEW.ended_at IS DISTINCT FROM OLD.ended_at THEN NEW.end_time := NEW.ended_at; "
        "ELSE NEW.ended_at := NEW.end_time; END IF; RETURN NEW; END $$",
        f"DROP TRIGGER IF EXISTS {_NAME}_sync ON flow_run",
        f"CREATE TRIGGER {_NAME}_sync BEFORE INSERT OR UPDATE ON flow_run "
        f"FOR EACH ROW EXECUTE FUNCTION {_NAME}_sync()",
    ],
    "mysql": [
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_insert BEFORE INSERT ON flow_run FOR EACH ROW "
        "SET NEW.ended_at = COALESCE(NEW.ended_at, NEW.end_time), "
        "NEW.end_time = COALESCE(NEW.end_time, NEW.ended_at)",
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_update BEFORE UPDATE ON flow_run FOR EACH ROW "
        "SET NEW.end_time = IF(NEW.ended_at <=> OLD.ended_at, NEW.end_time, NEW.ended_at), "
        "NEW.ended_at = NEW.end_time",
    ],
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_insert AFTER INSERT ON flow_run "
        "WHEN NEW.ended_at IS NOT NEW.end_time BEGIN UPDATE flow_run SET "
        "ended_at = COALESCE(NEW.ended_at, NEW.end_time), "
        "end_time = COALESCE(NEW.end_time, NEW.ended_at) WHERE id = NEW.id; END",
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_ended_at AFTER UPDATE OF ended_at ON flow_run "
        "WHEN NEW.ended_at IS NOT OLD.ended_at AND NEW.end_time IS NOT NEW.ended_at "
        "BEGIN UPDATE flow_run SET end_time = NEW.ended_at WHERE id = NEW.id; END",
        f"CREATE TRIGGER IF NOT EXISTS {_NAME}_end_time AFTER UPDATE OF end_time ON flow_run "
        "WHEN NEW.end_time IS NOT OLD.end_time AND NEW.ended_at IS NOT NEW.end_time "
        "BEGIN UPDATE flow_run SET ended_at = NEW.end_time WHERE id = NEW.id; END",
    ],
}
STOP_KEEPING_IN_STEP = {
    "postgresql": [
        f"DROP TRIGGER IF EXISTS {_NAME}_sync ON flow_run",
        f"DROP FUNCTION IF EXISTS {_NAME}_sync()",
    ],
    "mysql": [f"DROP TRIGGER IF EXISTS {_NAME}_insert", f"DROP TRIGGER IF EXISTS {_NAME}_update"],
    "sqlite": [
        f"DROP TRIGGER IF EXISTS {_NAME}_insert",
        f"DROP TRIGGER IF EXISTS {_NAME}_ended_at",
        f"DROP TRIGGER IF EXISTS {_NAME}_end_time",
    ],
}


def upgrade() -> None:
    online = OnlineMigration(revision)
    h.add_column_if_missing("flow_run", sa.Column("ended_at", h.timestamp(), nullable=True))
    for statement in per_dialect(**KEEP_IN_STEP, mariadb=KEEP_IN_STEP["mysql"]):
        op.execute(statement)
    online.backfill(
        "flow_run",
        "UPDATE flow_run SET ended_at = end_time "
        "WHERE ended_at IS NULL AND end_time IS NOT NULL AND {batch}",
    )
    online.create_index("ix_flow_run__ended_at", "flow_run", ["ended_at"])
    online.contract()  # nothing needs a strong lock: only the version is recorded
    online.finish()


def downgrade() -> None:
    for statement in per_dialect(**STOP_KEEPING_IN_STEP, mariadb=STOP_KEEPING_IN_STEP["mysql"]):
        op.execute(statement)
    # SQLite drops no indexed column: the index goes first.
    op.drop_index("ix_flow_run__ended_at", table_name="flow_run", if_exists=True)
    if h.still_needed(lambda: h.has_column("flow_run", "ended_at")):
        op.drop_column("flow_run", "ended_at")
