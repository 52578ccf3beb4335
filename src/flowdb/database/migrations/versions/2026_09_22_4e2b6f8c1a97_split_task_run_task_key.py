"""Split task_run.task_key "<key>:<dynamic key>" into task_key and dynamic_key.

Data migration. The text before the first ':' stays in task_key, the rest moves to
the new dynamic_key ('' when there was no ':'). The unique key becomes
(flow_run_id, task_key, dynamic_key). The downgrade joins the two columns again, so
every value round-trips, except a task_key that ended in a bare ':' ("a:"), which
comes back as "a".

The old unique constraint is dropped before the split (two calls "t:0" and "t:1" of
one task share task_key "t" afterwards) and the new one created after it.

Online data migration (``migrations/online.py``). PostgreSQL: the column is added
nullable and the old unique constraint dropped, a trigger splits the keys of rows the
running API writes meanwhile, the new unique index is built concurrently, rows are
split in key-range batches of their own transactions, NOT NULL is proven by a
validated check, and the last phase only changes metadata (SET NOT NULL, the index
becomes the constraint). SQLite: the table is rebuilt without the old constraint, the
batches split the keys, and the last phase splits rows written meanwhile and rebuilds
the table with the NOT NULL column and the new constraint. The previous code cannot
keep serving: its task keys are rewritten under it.

Revision ID: 4e2b6f8c1a97
Revises: 3d1a5e7b9f86
Create Date: 2026-09-22 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration, per_dialect

revision: str = "4e2b6f8c1a97"
down_revision: str | None = "3d1a5e7b9f86"
branch_labels = None
depends_on = None

OLD_UNIQUE = "uq_task_run__flow_run_id_task_key"
NEW_UNIQUE = "uq_task_run__flow_run_id_task_key_dynamic_key"


def task_run(*extra: object) -> sa.Table:
    """task_run as revision b7e2d9a1c4f0 created it, without its unique key, plus ``extra``."""
    return h.frozen_table(
        "task_run",
        *h.base_columns(),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("task_key", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state_type", h.state_type(), nullable=True),
        sa.Column("state_name", sa.String(255), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_time", h.timestamp(), nullable=True),
        sa.Column("end_time", h.timestamp(), nullable=True),
        h.json_column("tags", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_task_run"),
        h.fk("task_run", "flow_run_id", "flow_run", "CASCADE"),
        sa.Index("ix_task_run__state_type_start_time", "state_type", "start_time"),
        *extra,
    )


#: MySQL, while the downgrade swaps the unique keys: the foreign key's index.
FLOW_RUN_INDEX = "ix_task_run__flow_run_id_downgrade"

SERVES_PREVIOUS_CODE = False  # task keys are rewritten in place

#: PostgreSQL: rows the running API writes while the migration runs are split at once.
SPLIT_NEW_ROWS = [
    "CREATE OR REPLACE FUNCTION flowdb_4e2b6f8c1a97_split() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN IF NEW.dynamic_key IS NULL THEN "
    "IF strpos(NEW.task_key, ':') > 0 THEN "
    "NEW.dynamic_key := substr(NEW.task_key, strpos(NEW.task_key, ':') + 1); "
    "NEW.task_key := substr(NEW.task_key, 1, strpos(NEW.task_key, ':') - 1); "
    "ELSE NEW.dynamic_key := ''; END IF; END IF; RETURN NEW; END $$",
    "DROP TRIGGER IF EXISTS flowdb_4e2b6f8c1a97_split ON task_run",
    "CREATE TRIGGER flowdb_4e2b6f8c1a97_split BEFORE INSERT OR UPDATE ON task_run "
    "FOR EACH ROW EXECUTE FUNCTION flowdb_4e2b6f8c1a97_split()",
]
STOP_SPLITTING = [
    "DROP TRIGGER IF EXISTS flowdb_4e2b6f8c1a97_split ON task_run",
    "DROP FUNCTION IF EXISTS flowdb_4e2b6f8c1a97_split()",
]


def split_statement(where: str) -> str:
    """Split task_key at its first ':' into task_key and dynamic_key, for rows ``where``."""
    colon = h.text_position(":", "task_key")
    return (
        f"UPDATE task_run SET "
        f"dynamic_key = CASE WHEN {colon} > 0 THEN substr(task_key, {colon} + 1) ELSE '' END, "
        f"task_key = CASE WHEN {colon} > 0 THEN substr(task_key, 1, {colon} - 1) "
        f"ELSE task_key END "
        f"WHERE dynamic_key IS NULL AND {where}"
    )


def upgrade() -> None:
    online = OnlineMigration(revision)
    if h.dialect().render_as_batch:  # SQLite: constraints live in the table definition
        if not h.has_column("task_run", "dynamic_key"):
            before = task_run(sa.UniqueConstraint("flow_run_id", "task_key", name=OLD_UNIQUE))
            with op.batch_alter_table("task_run", copy_from=before) as batch:
                batch.drop_constraint(OLD_UNIQUE, type_="unique")
                batch.add_column(sa.Column("dynamic_key", sa.String(255), nullable=True))
    else:
        h.add_column_if_missing("task_run", sa.Column("dynamic_key", sa.String(255), nullable=True))
        if not h.dialect().ddl_commits:
            op.execute(f"ALTER TABLE task_run DROP CONSTRAINT IF EXISTS {OLD_UNIQUE}")
        for statement in per_dialect(postgresql=SPLIT_NEW_ROWS):
            op.execute(statement)
        online.create_index(
            NEW_UNIQUE, "task_run", ["flow_run_id", "task_key", "dynamic_key"], unique=True
        )
        if h.dialect().ddl_commits:  # MySQL: the old key serves the foreign key until now
            op.execute(f"ALTER TABLE task_run DROP INDEX IF EXISTS {OLD_UNIQUE}")

    online.backfill("task_run", split_statement("{batch}"))
    online.prove_not_null("task_run", "dynamic_key")
    online.contract()
    if h.dialect().render_as_batch:  # SQLite: split rows written meanwhile, then rebuild
        op.execute(split_statement("1 = 1"))
        split = task_run(sa.Column("dynamic_key", sa.String(255), nullable=True))
        with op.batch_alter_table("task_run", copy_from=split) as batch:
            batch.alter_column("dynamic_key", existing_type=sa.String(255), nullable=False)
            batch.create_unique_constraint(NEW_UNIQUE, ["flow_run_id", "task_key", "dynamic_key"])
    else:
        online.set_not_null("task_run", "dynamic_key")
        # PostgreSQL: the unique index becomes the constraint (MySQL: it already is).
        attach = f"ALTER TABLE task_run ADD CONSTRAINT {NEW_UNIQUE} UNIQUE USING INDEX {NEW_UNIQUE}"
        for statement in per_dialect(postgresql=[attach, *STOP_SPLITTING]):
            op.execute(statement)
    online.finish()


def downgrade() -> None:
    after = task_run(
        sa.Column("dynamic_key", sa.String(255), nullable=False),
        sa.UniqueConstraint("flow_run_id", "task_key", "dynamic_key", name=NEW_UNIQUE),
    )
    if h.dialect().ddl_commits:  # MySQL: the foreign key needs an index on flow_run_id
        op.create_index(FLOW_RUN_INDEX, "task_run", ["flow_run_id"])
    with op.batch_alter_table("task_run", copy_from=after) as batch:
        batch.drop_constraint(NEW_UNIQUE, type_="unique")

    # Emptying dynamic_key as it is joined makes a rerun (MySQL) join each row once.
    if h.still_needed(lambda: h.has_column("task_run", "dynamic_key")):
        h.execute_in_batches(
            "task_run",
            "UPDATE task_run SET task_key = CASE WHEN dynamic_key = '' THEN task_key "
            "ELSE task_key || ':' || dynamic_key END, dynamic_key = '' WHERE {batch}",
        )

    joined = task_run(sa.Column("dynamic_key", sa.String(255), nullable=False))
    with op.batch_alter_table("task_run", copy_from=joined) as batch:
        batch.drop_column("dynamic_key")
        batch.create_unique_constraint(OLD_UNIQUE, ["flow_run_id", "task_key"])
    if h.dialect().ddl_commits:
        op.drop_index(FLOW_RUN_INDEX, table_name="task_run")
