"""Building blocks for migration files.

Migrations are frozen in time, so nothing here may change meaning once a revision
uses it: add new helpers instead of editing old ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from flowdb.database.dialects import backends, dialect_class
from flowdb.database.dialects.base import Dialect
from flowdb.database.events import Progress

#: Where long data migrations report how far they got (the CLI shows it).
progress = logging.getLogger("flowdb.migrations")

#: Rows per batch when no flowdb settings reach the migration (bare Alembic);
#: otherwise FLOWDB_MIGRATION_BATCH_SIZE decides.
DEFAULT_BATCH_SIZE = 10_000

STATE_TYPE_VALUES = (
    "SCHEDULED",
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CRASHED",
    "PAUSED",
    "CANCELLING",
)

NOW = sa.text("CURRENT_TIMESTAMP")


def dialect() -> type[Dialect]:
    """The flowdb dialect being migrated (works online and offline)."""
    found = dialect_class(str(op.get_context().dialect.name))
    assert found is not None, "flowdb migrations run only on dialects flowdb supports"
    return found


def state_type() -> sa.types.TypeEngine[Any]:
    """The ``state_type`` enum column type; on PostgreSQL the type must already exist."""
    return sa.Enum(*STATE_TYPE_VALUES, name="state_type", create_constraint=False).with_variant(
        postgresql.ENUM(*STATE_TYPE_VALUES, name="state_type", create_type=False), "postgresql"
    )


def create_state_type_enum() -> None:
    """Create the enum type explicitly where enums are types of their own (PostgreSQL)."""
    if dialect().features.native_enums:
        postgresql.ENUM(*STATE_TYPE_VALUES, name="state_type").create(op.get_bind())


def drop_state_type_enum() -> None:
    """Drop the enum type created by ``create_state_type_enum``."""
    if dialect().features.native_enums:
        postgresql.ENUM(*STATE_TYPE_VALUES, name="state_type").drop(op.get_bind())


def json_document() -> sa.types.TypeEngine[Any]:
    """JSON column type: JSONB on PostgreSQL, JSON text on SQLite."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def timestamp() -> sa.types.TypeEngine[Any]:
    """A timezone-aware timestamp column type (MySQL: ``DATETIME(6)``, UTC, microseconds)."""

    column_type: sa.types.TypeEngine[Any] = sa.DateTime(timezone=True)
    for name in backends():
        found = dialect_class(name)
        special = found.timestamp_type() if found is not None else None
        if special is not None:
            column_type = column_type.with_variant(special, name)
    return column_type


def base_columns() -> list[sa.Column[Any]]:
    """The ``id``, ``created`` and ``updated`` columns every table starts with."""
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", timestamp(), server_default=NOW, nullable=False),
        sa.Column("updated", timestamp(), server_default=NOW, nullable=False),
    ]


def json_column(name: str, default: str | None = None, nullable: bool = False) -> sa.Column[Any]:
    """A JSON document column with an optional literal server default such as ``'[]'``."""
    server_default = sa.text(f"'{default}'") if default is not None else None
    return sa.Column(name, json_document(), server_default=server_default, nullable=nullable)


def fk(
    table: str, column: str, target: str, ondelete: str, name: str | None = None
) -> sa.ForeignKeyConstraint:
    """A named foreign key ``table.column -> target.id`` following flowdb's naming convention."""
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=name or f"fk_{table}__{column}__{target}",
        ondelete=ondelete,
    )


def frozen_table(name: str, *items: Any) -> sa.Table:
    """A Table object describing ``name`` as it is at this revision.

    Batch operations on SQLite are given this as ``copy_from`` so that they never
    reflect the live table: that keeps ``--dry-run`` (offline mode) working.
    """
    return sa.Table(name, sa.MetaData(), *items)


def batch_size() -> int:
    """Rows per batch: FLOWDB_MIGRATION_BATCH_SIZE, else the dialect's default (SQLite 2,000).

    SQLite's writers wait for a whole batch (one writer at a time), so its batches are
    smaller than the setting's default unless the setting is given.
    """
    config = op.get_context().config
    database = config.attributes.get("database") if config is not None else None
    if database is None:
        return DEFAULT_BATCH_SIZE
    settings = database.settings
    own = dialect().features.default_batch_rows
    if own is not None and not settings.is_given("migration_batch_size"):
        return own
    return int(settings.migration_batch_size)


def key_ranges(table: str, key: str = "id", after: Any = None) -> Iterator[tuple[Any, Any] | None]:
    """Yield ``(low, high)`` key bounds covering ``table`` in batches, or one ``None`` offline.

    A batch is ``low < key <= high``; ``low`` is ``None`` for the first batch (or
    ``after``, to continue a run that stopped there) and ``high`` is ``None`` for the
    last. Each bound is found with one indexed query that returns a single key, so no
    rows travel through Python. Offline (``--dry-run``) there is nothing to query: the
    caller emits its statement once for the whole table.
    """
    if context.is_offline_mode():
        yield None
        return
    bind = op.get_bind()
    nth_key = f"SELECT {key} FROM {table} {{where}} ORDER BY {key} LIMIT 1 OFFSET :skip"
    first = sa.text(nth_key.format(where=""))
    following = sa.text(nth_key.format(where=f"WHERE {key} > :low"))
    skip = batch_size() - 1
    low: Any = after
    while True:
        if low is None:
            high = bind.execute(first, {"skip": skip}).scalar()
        else:
            high = bind.execute(following, {"low": low, "skip": skip}).scalar()
        yield (low, high)
        if high is None:
            return
        low = high


def execute_in_batches(table: str, *statements: str, key: str = "id") -> None:
    """Run set-based ``statements`` over ``table``, one key-range batch at a time.

    Each statement must contain ``{batch}``, which becomes a condition on ``key``
    selecting the current batch (``1 = 1`` offline, where each statement runs once).
    All batches run in the migration's one transaction: the migration stays atomic,
    while each statement touches a bounded number of rows. Tables bigger than one
    batch report their progress (rows the first statement touched so far) on the
    ``flowdb.migrations`` logger, which the CLI shows while it waits.
    """
    rows = 0
    for number, bounds in enumerate(key_ranges(table, key), start=1):
        if bounds is None:
            for statement in statements:
                op.execute(statement.format(batch="1 = 1"))
            continue
        low, high = bounds
        conditions = [f"{key} > :low"] if low is not None else []
        conditions += [f"{key} <= :high"] if high is not None else []
        condition = " AND ".join(conditions) or "1 = 1"
        params = {"low": low, "high": high}
        for index, statement in enumerate(statements):
            result = op.get_bind().execute(sa.text(statement.format(batch=condition)), params)
            if index == 0:
                rows += max(result.rowcount, 0)
        if high is not None or number > 1:
            message = f"{table}: {rows:,} rows so far (batch {number})"
            progress.info(message, extra={"event": Progress(message)})


def text_position(needle: str, column: str) -> str:
    """SQL for the 1-based position of ``needle`` in ``column`` (0 when absent)."""
    return dialect().text_position(needle, column)


def has_table(name: str) -> bool:
    """Whether ``name`` exists now; ``False`` offline, where every statement is printed.

    For steps a rerun of an interrupted online migration may find done already.
    """
    if context.is_offline_mode():
        return False
    return bool(sa.inspect(op.get_bind()).has_table(name))


def has_column(table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` now; ``False`` offline (see ``has_table``)."""
    if context.is_offline_mode():
        return False
    return any(c["name"] == column for c in sa.inspect(op.get_bind()).get_columns(table))


def still_needed(work_left: Callable[[], bool]) -> bool:
    """Whether a step must run: always offline and where a migration is one transaction.

    Where DDL commits by itself (MySQL) a rerun of a killed migration may find the step
    done, and its SQL would fail or do it twice: it runs only while ``work_left()``.
    """
    return context.is_offline_mode() or not dialect().features.ddl_commits or work_left()


def add_column_if_missing(table: str, column: sa.Column[Any]) -> None:
    """``op.add_column`` unless an interrupted run of the same migration added it already."""
    if not has_column(table, column.name):
        op.add_column(table, column)


def rename_column(table: str, old: str, new: str) -> None:
    """Rename ``table.old`` to ``new`` in place.

    Where DDL commits by itself (MySQL) the rename is ``RENAME COLUMN`` (Alembic's would
    need the full column type), skipped when a rerun finds it done; elsewhere Alembic's
    ``alter_column``, inside the migration's transaction.
    """
    if not dialect().features.ddl_commits:
        op.alter_column(table, old, new_column_name=new)
    elif context.is_offline_mode() or has_column(table, old):
        op.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")


def as_text(expression: str) -> str:
    """SQL casting ``expression`` to text in the dialect being migrated."""
    return dialect().as_text(expression)


def upsert_update(key: str, columns: list[str]) -> str:
    """The dialect's clause that turns an INSERT into an update of an existing ``key``."""
    return dialect().upsert_update(key, columns)
