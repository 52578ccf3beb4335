"""Online data migrations: expand, backfill in batches, constrain without a scan, contract.

A data migration on a table that grows must not hold a strong lock while data moves:
a waiting ACCESS EXCLUSIVE request stalls every query on the table, and a backfill
inside the transaction that took it stalls them for as long as the backfill runs.
``OnlineMigration`` splits a revision's ``upgrade()`` into phases, each its own short
transaction:

1. *expand*: new nullable columns, new tables, triggers that keep new rows right;
2. *backfill*: set-based statements over key ranges, one transaction per batch, the
   last key recorded with the batch so that a rerun continues where a kill stopped;
3. *index*: ``CREATE INDEX CONCURRENTLY`` where the dialect can (an INVALID leftover
   of a killed build is dropped and built again, never skipped);
4. *prove*: ``CHECK (col IS NOT NULL) NOT VALID`` then ``VALIDATE`` (no strong lock),
   so that ``SET NOT NULL`` needs no scan;
5. *contract*: the metadata-only changes that need the strong lock; Alembic then
   records the revision in this same last transaction.

Every phase is idempotent, and ``flowdb_migration_progress`` (written in each phase's
own transaction) says which migration is part way through, in which phase, with how
many rows done: ``flowdb database current`` shows it, and ``downgrade`` refuses until an
``upgrade`` has finished it. The revision in ``alembic_version`` advances only when the
whole migration has completed, in the commit that forgets the progress row (where DDL
commits by itself, ``restartable.unmark`` forgets it after the version update).

Offline (``--dry-run``), phases print as ``COMMIT;``/``BEGIN;`` with a comment and each
backfill statement once for the whole table; the progress bookkeeping is not printed.

SQLite has no online DDL: its phases run the same way (each batch in its own
``BEGIN IMMEDIATE``, so the server's writers interleave), and its contract phase
rebuilds the table as before.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from alembic import op

from flowdb.database import bookkeeping
from flowdb.database.alembic_internals import commit_and_begin
from flowdb.database.events import PhaseStarted, Progress
from flowdb.database.migrations import index_progress
from flowdb.database.migrations.helpers import (
    add_column_if_missing,
    batch_size,
    dialect,
    has_column,
    key_ranges,
)
from flowdb.database.waiting import format_seconds

progress = logging.getLogger("flowdb.migrations")


class OnlineMigration:
    """The phases of one revision's online upgrade; see the module docstring."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        self.context = op.get_context()
        self.offline = bool(self.context.as_sql)
        self.phase_name = "expand"
        self.rows_done = 0
        self.last_key: str | None = None
        self.rows_total: int | None = None
        self.resumed_phase: str | None = None
        if self.offline:
            op.execute(f"-- {revision}: online migration, phase expand")
            return
        op.execute(bookkeeping.CREATE_PROGRESS)
        # A progress table an older flowdb created (and left part way) has no rows_total.
        self.records_total = has_column(bookkeeping.PROGRESS_TABLE, "rows_total")
        row = bookkeeping.read_progress(op.get_bind(), revision)
        if row is not None:  # a rerun after an interruption: say so, then continue
            self.resumed_phase, self.rows_done, self.last_key = row
            message = (
                f"{revision}: continuing from phase {self.resumed_phase} "
                f"({self.rows_done:,} rows done)"
            )
            progress.info(message, extra={"event": Progress(message)})
        self._record()

    # --- phases -------------------------------------------------------------------------------

    def phase(self, name: str) -> None:
        """Commit the work so far and go on in a new transaction, as phase ``name``."""
        self._next_transaction()
        self._enter(name)

    def backfill(self, table: str, *statements: str, key: str = "id") -> None:
        """Run ``statements`` over ``table`` in key-range batches, one transaction each.

        Each statement holds ``{batch}``, a condition selecting the batch's keys, and
        must itself skip rows already done (``... AND new_column IS NULL``), so that a
        batch repeated after a kill changes nothing twice. The batch's last key is
        recorded with it; a rerun starts after the last batch that committed.
        """
        if self.resumed_phase == "contract" and dialect().features.ddl_commits:
            # Every batch committed before the contract began, and the contract's DDL
            # (committed by itself) may have dropped the columns the backfill reads.
            return
        self.phase("backfill")
        if self.offline:
            for statement in statements:
                op.execute(statement.format(batch="1 = 1"))
            return
        bind = op.get_bind()
        resume = self.last_key if self.resumed_phase == "backfill" else None
        start_rows = self.rows_done if resume is not None else 0
        rows = start_rows
        # The total is the table's rows now; rows done counts the rows the first statement
        # changed, so a backfill that skips rows ends below it. Time left is estimated from
        # the share of the table's keys covered so far.
        total = int(bind.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)
        self.rows_total = total
        started, size = time.monotonic(), batch_size()
        for number, bounds in enumerate(key_ranges(table, key, after=resume), start=1):
            assert bounds is not None  # online: real key ranges
            low, high = bounds
            conditions = [f"{key} > :low"] if low is not None else []
            conditions += [f"{key} <= :high"] if high is not None else []
            condition = " AND ".join(conditions) or "1 = 1"
            for index, statement in enumerate(statements):
                result = bind.execute(
                    sa.text(statement.format(batch=condition)), {"low": low, "high": high}
                )
                if index == 0:
                    rows += max(result.rowcount, 0)
            self.rows_done, self.last_key = rows, None if high is None else str(high)
            self._record()
            self._next_transaction(pause=dialect().features.batch_pause)
            if high is not None or number > 1 or resume is not None:
                message = f"{table}: {rows:,} rows so far (batch {number})"
                message += _how_far(start_rows, number * size, high is None, total, started)
                progress.info(message, extra={"event": Progress(message, done=rows, total=total)})

    def create_index(
        self, name: str, table: str, columns: list[str], *, unique: bool = False
    ) -> None:
        """Build an index without blocking writes where the dialect can.

        PostgreSQL: ``CREATE [UNIQUE] INDEX CONCURRENTLY`` outside a transaction; an
        INVALID index of that name (a killed build) is dropped first; a valid one is
        kept. Other dialects: a plain ``CREATE INDEX IF NOT EXISTS`` in its own phase.
        """
        kind = "UNIQUE INDEX" if unique else "INDEX"
        column_list = ", ".join(columns)
        if not dialect().features.concurrent_indexes:
            self.phase(f"index {name}")
            op.execute(dialect().create_index_if_missing(kind, name, table, column_list))
            return
        # The phase is recorded in the current transaction, which the build's
        # autocommit block commits: a concurrent build cannot run inside one.
        self._enter(f"index {name}")
        schema = self._schema_prefix()
        if not self.offline:
            valid = (
                op.get_bind()
                .execute(
                    sa.text(
                        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid WHERE c.relname = :name "
                        "AND c.relnamespace = current_schema()::regnamespace"
                    ),
                    {"name": name},
                )
                .scalar()
            )
            if valid:
                return
        with self.context.autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema}{name}")
            build = f"CREATE {kind} CONCURRENTLY {name} ON {schema}{table} ({column_list})"
            if self.offline:
                op.execute(build)
                return
            engine = op.get_bind().engine
            with index_progress.reported(
                name, f"{schema}{table}", engine, dialect().read_index_build
            ):
                op.execute(build)

    def drop_index(self, name: str) -> None:
        """Drop an index without blocking the table where the dialect can (``CONCURRENTLY``)."""
        if not dialect().features.concurrent_indexes:
            self.phase(f"drop index {name}")
            op.execute(dialect().drop_index_if_exists(name))
            return
        self._enter(f"drop index {name}")
        schema = self._schema_prefix()
        with self.context.autocommit_block():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema}{name}")

    def _schema_prefix(self) -> str:
        """``"schema".`` of the migration's current schema, read in its transaction.

        Statements outside a transaction (concurrent index builds) name it: behind a
        transaction pooler the URL's search_path is set per transaction only, so such a
        statement would otherwise look for the table in the server session's default
        schema. Offline (rendered SQL), names stay as written.
        """
        if self.offline:
            return ""
        schema = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
        return "" if schema is None else '"' + str(schema).replace('"', '""') + '".'

    def prove_not_null(self, table: str, column: str) -> None:
        """Make ``SET NOT NULL`` scan-free: a NOT VALID check, then its validation.

        Only where the dialect validates constraints without a strong lock; elsewhere
        the contract phase's table rebuild checks the column.
        """
        if not dialect().features.deferred_validation:
            return
        check = _not_null_check(table, column)
        self.phase(f"prove {column}")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"
        )
        self.phase(f"validate {column}")
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}")

    def add_foreign_key(
        self, name: str, table: str, column: str, target: str, ondelete: str
    ) -> None:
        """Add a foreign key unchecked, then validate it without a strong lock."""
        definition = f"FOREIGN KEY ({column}) REFERENCES {target} (id) ON DELETE {ondelete}"
        self._add_then_validate(table, name, definition, name)

    def add_reference(self, table: sa.Table, column: str, target: str, ondelete: str) -> None:
        """A new nullable ``column`` on an existing table, referring to ``target``, indexed.

        PostgreSQL: the column (metadata only), the foreign key unchecked then validated,
        the index built concurrently. SQLite: all three with one rebuild of ``table``
        (its definition before the change, as a frozen table), skipped when a rerun
        finds the column there.
        """
        foreign_key = f"fk_{table.name}__{column}__{target}"
        index = f"ix_{table.name}__{column}"
        if dialect().features.render_as_batch:
            if not has_column(table.name, column):
                with op.batch_alter_table(table.name, copy_from=table) as batch:
                    batch.add_column(sa.Column(column, sa.Uuid(), nullable=True))
                    batch.create_foreign_key(
                        foreign_key, target, [column], ["id"], ondelete=ondelete
                    )
                    batch.create_index(index, [column])
            return
        add_column_if_missing(table.name, sa.Column(column, sa.Uuid(), nullable=True))
        self.add_foreign_key(foreign_key, table.name, column, target, ondelete)
        self.create_index(index, table.name, [column])

    def contract(self) -> None:
        """Start the last phase: what needs the strong lock, then the version, one transaction."""
        self.phase("contract")

    def set_not_null(self, table: str, column: str) -> None:
        """``SET NOT NULL`` (no scan: the proven check stands in for it), then drop the check."""
        if not dialect().features.deferred_validation:  # MySQL: MODIFY with the column's own type
            if self.offline:  # the column's type is read from the live database
                op.execute(f"-- {table}.{column}: MODIFY with its current type, NOT NULL")
            else:
                op.execute(dialect().set_not_null(op.get_bind(), table, column))
            return
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {_not_null_check(table, column)}"
        )

    def finish(self) -> None:
        """Forget the progress row; Alembic records the revision in this same transaction.

        The table goes with its last row, so a database with no migration part way
        through has exactly the schema of its revision.

        Where DDL commits by itself the row stays for ``restartable.unmark``, which runs
        after Alembic's version update: dropping the table here would commit the row's
        removal before the version moved, and an interrupt in between would leave the
        migration's schema with neither its revision nor its mark.
        """
        if self.offline or dialect().features.ddl_commits:
            return
        bookkeeping.forget_progress(op.get_bind(), self.revision)

    # --- internals ------------------------------------------------------------------------------

    def _add_then_validate(self, table: str, name: str, definition: str, label: str) -> None:
        """Add constraint ``name`` NOT VALID (a short lock), then validate it (no strong lock).

        A rerun finds what an interrupted run left: a valid constraint is kept, an
        unvalidated one is validated. Where constraints cannot be added unchecked
        (MySQL), it is added checked in a phase of its own, unless a rerun finds it.
        """
        if not dialect().features.deferred_validation:
            if self.offline or not dialect().has_constraint(op.get_bind(), table, name):
                self.phase(f"add {label}")
                op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
            return
        state = None if self.offline else _constraint_validated(table, name)
        if state is None:
            self.phase(f"add {label}")
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")
        if state is not True:
            self.phase(f"validate {label}")
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")

    def _enter(self, name: str) -> None:
        """Record (and report) that phase ``name`` runs in the current transaction."""
        self.phase_name = name
        if self.offline:
            op.execute(f"-- {self.revision}: phase {name}")
            return
        self._record()
        progress.info(
            "%s: phase %s", self.revision, name, extra={"event": PhaseStarted(self.revision, name)}
        )

    def _record(self) -> None:
        recorded_total = self.records_total and self.phase_name == "backfill"
        bookkeeping.record_progress(
            op.get_bind(),
            self.revision,
            self.phase_name,
            self.rows_done,
            self.last_key,
            rows_total=self.rows_total if recorded_total else None,
        )

    def _next_transaction(self, pause: float = 0.0) -> None:
        """Commit the migration's transaction so far and begin the next one.

        Alembic takes the new transaction for the migration's own, so its final version
        update lands in the last phase's transaction (``alembic_internals``). On SQLite
        the new transaction starts with flowdb's ``BEGIN IMMEDIATE``, ``pause`` seconds
        after the commit (between backfill batches: the API's writers go first).
        """
        if self.offline:
            self.context.impl.emit_commit()
            self.context.impl.emit_begin()
            return
        commit_and_begin(self.context, pause)


def per_dialect(**sql: list[str]) -> list[str]:
    """The statements for the dialect being migrated, from ``sqlite=[...]``, ``postgresql=[...]``.

    For the parts of a migration that are written in each dialect's own SQL (triggers).
    """
    return sql.get(dialect().name, [])


def _how_far(before: int, covered: int, last: bool, total: int, started: float) -> str:
    """``, 40% of 20,000 rows, about 3 min left``: the share of the table's keys covered.

    ``before`` rows were covered by an earlier, interrupted run; ``covered`` in this one.
    """
    if total <= 0:
        return ""
    share = 1.0 if last else min((before + covered) / total, 1.0)
    text = f", {share:.0%} of {total:,} rows"
    if last or covered <= 0:
        return text
    elapsed = time.monotonic() - started
    left = elapsed / covered * max(total - before - covered, 0)
    return f"{text}, about {format_seconds(left)} left"


def _not_null_check(table: str, column: str) -> str:
    return f"ck_{table}__{column}__not_null_migration"


def _constraint_validated(table: str, name: str) -> bool | None:
    """Whether constraint ``name`` of ``table`` is validated; ``None`` when it does not exist."""
    value = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT convalidated FROM pg_constraint WHERE conname = :name "
                "AND conrelid = CAST(:table AS regclass)"
            ),
            {"name": name, "table": table},
        )
        .scalar()
    )
    return None if value is None else bool(value)
