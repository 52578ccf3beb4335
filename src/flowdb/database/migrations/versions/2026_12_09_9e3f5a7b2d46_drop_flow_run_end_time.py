"""Drop flow_run.end_time and the triggers that kept it equal to ended_at (contract).

The second half of renaming flow_run.end_time to ended_at (8d2e4f6a1c35 added ended_at
and kept both in step). The previous release reads and writes end_time, so this runs
only once no replica of it serves: ``flowdb database upgrade`` stops before it while
one does (``database/fleet.py``), and the last replica of this release runs it.

The downgrade adds end_time back, copies ended_at into it in key-range batches and
restores the triggers and end_time's index, so the database is again as the expand
revision left it.

Revision ID: 9e3f5a7b2d46
Revises: 8d2e4f6a1c35
Create Date: 2026-12-09 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "9e3f5a7b2d46"
down_revision: str | None = "8d2e4f6a1c35"
branch_labels = None
depends_on = None

PHASE = "contract"  # drops end_time, which the previous release reads and writes
SERVES_PREVIOUS_CODE = False

#: The expand revision's triggers, as it created them (a revision file stands alone).
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
    # SQLite drops no indexed column: 8c6f0a3e5b41's index goes first (concurrently on
    # PostgreSQL, which would drop it with the column under the table's strong lock).
    online.drop_index("ix_flow_run__end_time")
    online.contract()
    for statement in per_dialect(**STOP_KEEPING_IN_STEP, mariadb=STOP_KEEPING_IN_STEP["mysql"]):
        op.execute(statement)
    if h.still_needed(lambda: h.has_column("flow_run", "end_time")):
        op.drop_column("flow_run", "end_time")
    online.finish()


def downgrade() -> None:
    h.add_column_if_missing("flow_run", sa.Column("end_time", h.timestamp(), nullable=True))
    h.execute_in_batches(
        "flow_run",
        "UPDATE flow_run SET end_time = ended_at "
        "WHERE end_time IS NULL AND ended_at IS NOT NULL AND {batch}",
    )
    op.create_index("ix_flow_run__end_time", "flow_run", ["end_time"], if_not_exists=True)
    for statement in per_dialect(**KEEP_IN_STEP, mariadb=KEEP_IN_STEP["mysql"]):
        op.execute(statement)
