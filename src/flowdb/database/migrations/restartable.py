"""Rerunnable DDL where every DDL statement commits by itself (MySQL, MariaDB).

There a migration cannot be one transaction: a process killed after its third
statement leaves three statements done and no version update. So on such a dialect
(``Features.ddl_commits``) flowdb makes every schema operation of the history rerunnable:

* Alembic's operations for the dialect (``create_table``, ``drop_table``,
  ``create_index``, ``drop_index``, ``add_column``, ``drop_column``, ``add_constraint``,
  ``drop_constraint``) first look whether their work is done already and then skip it;
  the history's own SQL is written rerunnable (``IF [NOT] EXISTS``, existence checks,
  idempotent data steps, see ``helpers`` and ``online``).
* Before an upgrade's first schema change, the migration is recorded in
  ``flowdb_migration_progress`` (phase ``statements``), in the statement's own commit;
  the record goes with the version update. ``flowdb database current`` shows it, and the
  next ``upgrade`` reruns the migration from its start, skipping what is done.
* A downgrade records each revision it reverts (phase ``downgrade``) before the first
  of its statements, the next one as the version moves down. A killed downgrade is
  finished by running it again; ``upgrade`` refuses until then (the schema is part
  reverted, and what the downgrade dropped is gone).

Offline (``--dry-run``) nothing is looked at: every statement is printed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from flowdb.database import bookkeeping


def install(context: Any) -> None:
    """Make the DDL implementation of ``context`` (a ``MigrationContext``) skip work a killed
    run did; only this migration run is guarded, Alembic's registry is left as it is."""
    from flowdb.database.alembic_internals import guard_implementation

    guard_implementation(context, _GUARDED)


def next_revision(connection: Any, history: Any) -> str | None:
    """The revision an upgrade applies next on ``connection``'s database (``None``: none)."""
    current = None
    if sa.inspect(connection).has_table(bookkeeping.ALEMBIC_VERSION_TABLE):
        current = connection.execute(sa.text(bookkeeping.SELECT_REVISIONS)).scalar()
    ids = [revision.id for revision in history.revisions]
    if current is None:
        return ids[0] if ids else None
    if current not in ids or ids.index(current) + 1 >= len(ids):
        return None
    return str(ids[ids.index(current) + 1])


def mark(connection: Any, revision: str, phase: str = bookkeeping.STATEMENTS_PHASE) -> None:
    """Record ``revision`` as part way through, unless it is already (by an online phase).

    The table is created only when missing: its ``CREATE`` commits the transaction so
    far by itself, and a downgrade step marks the next revision after its version
    update, which must commit together with the mark and the reverted one's removal.
    """
    if not sa.inspect(connection).has_table(bookkeeping.PROGRESS_TABLE):
        connection.execute(sa.text(bookkeeping.CREATE_PROGRESS))
    if bookkeeping.read_progress(connection, revision) is None:
        bookkeeping.record_progress(connection, revision, phase)


def mark_downgrade(connection: Any) -> None:
    """Record the revision a downgrade reverts first, before any of its statements.

    The record commits with the first statement that commits by itself; a process
    killed in the middle then leaves the revision marked (``current`` shows it, and
    ``upgrade`` refuses until the downgrade is run again).
    """
    current = connection.execute(sa.text(bookkeeping.SELECT_REVISIONS)).scalar()
    if current is not None:
        mark(connection, str(current), bookkeeping.DOWNGRADE_PHASE)


def downgrade_step_done(
    connection: Any, reverted: str, reached: str | None, target: str | None
) -> None:
    """After reverting ``reverted`` (now at ``reached``): mark the next one, forget this one."""
    if reached is not None and reached != target:
        mark(connection, reached, bookkeeping.DOWNGRADE_PHASE)
    unmark(connection, reverted)


def unmark(connection: Any, revision: str) -> None:
    """Forget ``revision``'s record (and the table with its last row): it has completed."""
    bookkeeping.forget_progress(connection, revision)


# --- the guarded operations (methods of the generated implementation class) ----------------


def _online(self: Any) -> bool:
    return not self.as_sql


def _inspector(self: Any) -> Any:
    return sa.inspect(self.connection)


def _before_change(self: Any) -> None:
    """Record the upgrade's migration before its first schema change commits."""
    config = self.context_opts.get("flowdb_config")
    if config is None or config.attributes.get("direction") != "upgrade":
        return
    database = config.attributes["database"]
    revision = next_revision(self.connection, database.history)
    if revision is not None:
        mark(self.connection, revision)


def _index_names(self: Any, table: str) -> set[str]:
    inspector = _inspector(self)
    if not inspector.has_table(table):
        return set()
    names = {index["name"] for index in inspector.get_indexes(table)}
    names |= {unique["name"] for unique in inspector.get_unique_constraints(table)}
    return names


def _column_names(self: Any, table: str) -> set[str]:
    inspector = _inspector(self)
    if not inspector.has_table(table):
        return set()
    return {column["name"] for column in inspector.get_columns(table)}


def _constraint_exists(self: Any, table: str, name: str | None) -> bool:
    from flowdb.database.dialects import dialect_class

    dialect = dialect_class(self.dialect.name)
    assert dialect is not None, "guarded only on dialects flowdb supports"
    return name is not None and dialect.has_constraint(self.connection, table, name)


def _create_table(self: Any, table: Any, **kw: Any) -> None:
    if _online(self):
        if _inspector(self).has_table(table.name):
            return
        _before_change(self)
    super(type(self), self).create_table(table, **kw)


def _drop_table(self: Any, table: Any, **kw: Any) -> None:
    if _online(self) and not _inspector(self).has_table(table.name):
        return
    super(type(self), self).drop_table(table, **kw)


def _create_index(self: Any, index: Any, **kw: Any) -> None:
    if _online(self):
        if index.name in _index_names(self, index.table.name):
            return
        _before_change(self)
    super(type(self), self).create_index(index, **kw)


def _drop_index(self: Any, index: Any, **kw: Any) -> None:
    if _online(self) and index.name not in _index_names(self, index.table.name):
        return
    super(type(self), self).drop_index(index, **kw)


def _add_column(self: Any, table_name: str, column: Any, *args: Any, **kw: Any) -> None:
    if _online(self):
        if column.name in _column_names(self, table_name):
            return
        _before_change(self)
    super(type(self), self).add_column(table_name, column, *args, **kw)


def _drop_column(self: Any, table_name: str, column: Any, *args: Any, **kw: Any) -> None:
    if _online(self):
        if column.name not in _column_names(self, table_name):
            return
        _before_change(self)
    super(type(self), self).drop_column(table_name, column, *args, **kw)


def _add_constraint(self: Any, const: Any, **kw: Any) -> None:
    if _online(self):
        table = const.table.name
        if const.name is not None and _constraint_exists(self, table, const.name):
            return
        _before_change(self)
    super(type(self), self).add_constraint(const, **kw)


def _drop_constraint(self: Any, const: Any, **kw: Any) -> None:
    if _online(self) and not _constraint_exists(self, const.table.name, const.name):
        return
    super(type(self), self).drop_constraint(const, **kw)


_GUARDED = {
    "create_table": _create_table,
    "drop_table": _drop_table,
    "create_index": _create_index,
    "drop_index": _drop_index,
    "add_column": _add_column,
    "drop_column": _drop_column,
    "add_constraint": _add_constraint,
    "drop_constraint": _drop_constraint,
}
