"""What a plan does to data: the tables and columns a downgrade destroys, and name clashes.

A downgrade's losses are read from the SQL its migrations render for PostgreSQL, whose
``DROP TABLE`` and ``ALTER TABLE ... DROP COLUMN`` say plainly what goes (SQLite's
renderings copy tables instead), then counted in the live database: rows of each
dropped table, non-null values of each dropped column. Only what exists now is counted;
a column a downgrade first re-creates and later drops again holds nothing of today's.
What a downgrade copies back elsewhere before a drop (``moves``) is shown as moved, not
lost.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from flowdb.database.dialects.base import READS_ONLY
from flowdb.database.moves import move_of
from flowdb.database.runner import render_sql
from flowdb.errors import ForeignDatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

# The target is empty for the step that goes to base ("-- Running downgrade a3f1... -> ").
_RUNNING = re.compile(r"^-- Running (?:upgrade|downgrade) (?P<left>\S*) -> (?P<right>\S*)$", re.M)
_DROP_TABLE = re.compile(r'^DROP TABLE (?:IF EXISTS )?"?(?P<table>\w+)"?', re.M | re.I)
_DROP_COLUMN = re.compile(
    r'^ALTER TABLE "?(?P<table>\w+)"? DROP COLUMN (?:IF EXISTS )?"?(?P<column>\w+)"?', re.M | re.I
)
_RENDER_FOR = "postgresql+psycopg://render-only/flowdb"


@dataclass(frozen=True)
class Loss:
    """A table (``column`` is ``None``) or column a plan drops, and what of it moves elsewhere.

    ``rows`` counts everything in it now; ``moved`` of them the downgrade copies back
    ``into`` another place first (``moves``); the rest is lost.
    """

    revision: str
    table: str
    column: str | None
    rows: int
    moved: int = 0
    into: str = ""
    which: str = ""

    @property
    def lost(self) -> int:
        """The rows (values) that are gone after the plan."""
        return self.rows - self.moved

    def describe(self) -> str:
        """``drops table flow_run_state (250 rows)``, with what moves back where if anything."""
        if self.column is None:
            what = f"drops table {self.table} ({_count(self.rows, 'row')})"
        else:
            values = _count(self.rows, "non-null value")
            what = f"drops column {self.table}.{self.column} ({values})"
        if not self.moved:
            return what
        if not self.lost:
            return f"{what}: all move back into {self.into} ({self.which}); nothing is lost"
        return (
            f"{what}: {self.moved:,} move back into {self.into} ({self.which}), {self.lost:,} lost"
        )


def downgrade_losses(database: Database, plan: Plan, status: SchemaStatus) -> list[Loss]:
    """The tables and columns ``plan`` drops that hold data now, with their counts."""
    from sqlalchemy.engine import make_url

    if plan.direction != "downgrade" or plan.is_empty:
        return []
    buffer = io.StringIO()
    render_sql(database, plan, buffer, dialect_url=make_url(_RENDER_FOR))
    drops = _drops_by_revision(buffer.getvalue())
    if not drops:
        return []
    return _measure(database, drops, status.tables)


def table_losses(database: Database, tables: list[str], status: SchemaStatus) -> list[Loss]:
    """Losses of dropping whole ``tables`` (``reset``), counted where they exist."""
    return _measure(database, [("", table, None) for table in tables], status.tables)


def check_name_clashes(database: Database, plan: Plan, status: SchemaStatus) -> None:
    """Refuse an upgrade that would create a table the database already has."""
    if plan.direction != "upgrade":
        return
    part_way = {revision for revision, _, _ in status.in_progress}
    for step in plan.steps:
        if step.id in part_way:
            continue  # its tables were made by its own interrupted run, which resumes
        clashing = sorted(set(step.creates) & status.tables)
        if clashing:
            raise ForeignDatabaseError(
                f"{database.describe()[:1].upper()}{database.describe()[1:]} already has "
                f"table(s) {', '.join(clashing)}, which migration {step.id} ({step.title}) "
                "would create; they belong to another application. Use a database (or a "
                "PostgreSQL schema) of flowdb's own; nothing was changed."
            )


def _drops_by_revision(sql: str) -> list[tuple[str, str, str | None]]:
    """``(revision, table, column or None)`` for each drop in rendered SQL, in order."""
    drops: list[tuple[str, str, str | None]] = []
    marks = list(_RUNNING.finditer(sql))
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(sql)
        chunk = sql[mark.end() : end]
        reverted = mark["left"]  # the revision a downgrade step reverts is the one it leaves
        drops += [(reverted, m["table"], None) for m in _DROP_TABLE.finditer(chunk)]
        drops += [(reverted, m["table"], m["column"]) for m in _DROP_COLUMN.finditer(chunk)]
    return drops


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' if number != 1 else ''}"


def _measure(
    database: Database, drops: list[tuple[str, str, str | None]], existing: frozenset[str]
) -> list[Loss]:
    import sqlalchemy as sa

    losses: list[Loss] = []
    seen: set[tuple[str, str | None]] = set()
    if not any(table in existing for _, table, _ in drops):
        return losses  # nothing to count (and no connection that could create a file)
    # Data moved back into a table the same plan drops later is lost with it.
    dropped = {table for _, table, column in drops if column is None}
    engine = database.engine("flowdb-plan")
    try:
        with database.errors(), engine.connect() as connection:
            connection.execution_options(**{READS_ONLY: True})
            columns: dict[str, set[str]] = {}
            for revision, table, column in drops:
                if table not in existing or (table, column) in seen or (table, None) in seen:
                    continue
                if column is not None:
                    if table not in columns:
                        inspector = sa.inspect(connection)
                        columns[table] = {c["name"] for c in inspector.get_columns(table)}
                    if column not in columns[table]:
                        continue
                seen.add((table, column))
                rows = database.dialect.count_rows(connection, table, column)
                if rows:
                    loss = Loss(revision, table, column, rows)
                    losses.append(_with_move(connection, loss, dropped))
            connection.rollback()
    finally:
        engine.dispose()
    return losses


def _with_move(connection: Connection, loss: Loss, dropped: set[str]) -> Loss:
    """``loss`` with what its revision's downgrade moves back (``moves``) counted.

    Nothing survives a move into a table in ``dropped`` (the plan drops it later).
    """
    import sqlalchemy as sa

    move = move_of(loss.revision, loss.table, loss.column)
    if move is None or move.into.partition(".")[0] in dropped:
        return loss
    moved = loss.rows
    if move.count_sql is not None:
        moved = min(int(connection.execute(sa.text(move.count_sql)).scalar() or 0), loss.rows)
    return replace(loss, moved=moved, into=move.into, which=move.which)
