"""What a plan does to data: the tables and columns a downgrade destroys, and name clashes.

A downgrade's losses are read from the SQL its migrations render for PostgreSQL, whose
``DROP TABLE`` and ``ALTER TABLE ... DROP COLUMN`` say plainly what goes (SQLite's
renderings copy tables instead), then counted in the live database: rows of each
dropped table, non-null values of each dropped column. Only what exists now is counted;
a column a downgrade first re-creates and later drops again holds nothing of today's.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowdb.errors import ForeignDatabaseError

if TYPE_CHECKING:
    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

_RUNNING = re.compile(r"^-- Running (?:upgrade|downgrade) \S* -> (?P<revision>\S+)$", re.M)
_DROP_TABLE = re.compile(r'^DROP TABLE (?:IF EXISTS )?"?(?P<table>\w+)"?', re.M | re.I)
_DROP_COLUMN = re.compile(
    r'^ALTER TABLE "?(?P<table>\w+)"? DROP COLUMN (?:IF EXISTS )?"?(?P<column>\w+)"?', re.M | re.I
)
_RENDER_FOR = "postgresql+psycopg://render-only/flowdb"


@dataclass(frozen=True)
class Loss:
    """Data a plan destroys: a whole table (``column`` is ``None``) or one column."""

    revision: str
    table: str
    column: str | None
    rows: int

    def describe(self) -> str:
        """``drops table flow_run_state (250 rows)`` or ``drops column log.name (12 values)``."""
        if self.column is None:
            return f"drops table {self.table} ({self.rows:,} row{'s' if self.rows != 1 else ''})"
        return (
            f"drops column {self.table}.{self.column} "
            f"({self.rows:,} non-null value{'s' if self.rows != 1 else ''})"
        )


def downgrade_losses(database: Database, plan: Plan, status: SchemaStatus) -> list[Loss]:
    """The tables and columns ``plan`` drops that hold data now, with their counts."""
    from sqlalchemy.engine import make_url

    from flowdb.database.runner import render_sql

    if plan.direction != "downgrade" or plan.is_empty:
        return []
    buffer = io.StringIO()
    render_sql(database, plan, buffer, dialect_url=make_url(_RENDER_FOR))
    drops = _drops_by_revision(buffer.getvalue())
    if not drops:
        return []
    return _count(database, drops, status.tables)


def table_losses(database: Database, tables: list[str], status: SchemaStatus) -> list[Loss]:
    """Losses of dropping whole ``tables`` (``reset``), counted where they exist."""
    return _count(database, [("", table, None) for table in tables], status.tables)


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
        # The revision a downgrade step reverts is the one it leaves (left of "->").
        reverted = mark.group(0).split()[3]
        drops += [(reverted, m["table"], None) for m in _DROP_TABLE.finditer(chunk)]
        drops += [(reverted, m["table"], m["column"]) for m in _DROP_COLUMN.finditer(chunk)]
    return drops


def _count(
    database: Database, drops: list[tuple[str, str, str | None]], existing: frozenset[str]
) -> list[Loss]:
    import sqlalchemy as sa

    from flowdb.database.dialects.base import READS_ONLY

    losses: list[Loss] = []
    seen: set[tuple[str, str | None]] = set()
    if not any(table in existing for _, table, _ in drops):
        return losses  # nothing to count (and no connection that could create a file)
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
                    losses.append(Loss(revision, table, column, rows))
            connection.rollback()
    finally:
        engine.dispose()
    return losses
