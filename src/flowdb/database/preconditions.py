"""Data a migration cannot convert, found before the upgrade changes anything.

Released revision files never change, so what they assume about the data is checked
here: ``PRECONDITIONS`` maps a revision id to a read-only check of the data it
converts. ``commands.migrate`` runs the checks of every revision an upgrade plan
applies, under the migration lock and before it asks or runs anything, so a refusal
leaves the database exactly as it was and a rerun meets the same answer.

A check reads the data as the plan finds it. That is the data its revision converts
as long as no earlier revision of the same plan rewrites it; a check for a revision
whose data an earlier one rewrites must account for that itself.

A check names a few of the rows (in an order every dialect agrees on), how many there
are in all, the fix, and SQL that finds them; the refusal is ``UnconvertibleDataError``
(exit code 7).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowdb.errors import UnconvertibleDataError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from flowdb.database.dialects.base import Dialect
    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

#: How many groups of rows a refusal names.
EXAMPLES = 3


@dataclass(frozen=True)
class Blocked:
    """What a check found: the rows in words, how many, and what to do about them."""

    rows: int
    examples: str
    fix: str


#: A check: the connection, the dialect, the tables there now; ``None`` when the data converts.
Check = Callable[["Connection", "Dialect", frozenset[str]], Blocked | None]


def check_plan(database: Database, plan: Plan, status: SchemaStatus) -> None:
    """Raise ``UnconvertibleDataError`` for the first revision of ``plan`` its data blocks."""
    steps = [step for step in plan.steps if step.id in PRECONDITIONS]
    if plan.direction != "upgrade" or not steps or not status.tables:
        return
    engine = database.engine("flowdb-preflight")
    try:
        with database.errors(), engine.connect() as connection:
            for step in steps:
                blocked = PRECONDITIONS[step.id](connection, database.dialect, status.tables)
                if blocked is not None:
                    raise UnconvertibleDataError(
                        f"Migration {step.id} ({step.title.rstrip('.')}) cannot convert "
                        f"{blocked.rows:,} row(s) of {database.describe()}: {blocked.examples}; "
                        f"nothing was changed. {blocked.fix}"
                    )
            connection.rollback()
    finally:
        engine.dispose()


# --- 4e2b6f8c1a97: task_run.task_key split at its first ':' ---------------------------------


def split_task_keys(
    connection: Connection, dialect: Dialect, tables: frozenset[str]
) -> Blocked | None:
    """Task runs of one flow run whose keys become equal once split (``k`` and ``k:``).

    The old unique key is (flow_run_id, task_key); the new one (flow_run_id, task_key,
    dynamic_key), and both ``k`` and ``k:`` split into (``k``, ''). A row a killed run
    already split counts with its split key. Keys are compared as the database's
    unique key will compare them (MariaDB: under the column's collation).
    """
    import sqlalchemy as sa

    if "task_run" not in tables:
        return None
    columns = {column["name"] for column in sa.inspect(connection).get_columns("task_run")}
    position = dialect.text_position(":", "task_key")
    new_key = f"CASE WHEN {position} > 0 THEN substr(task_key, 1, {position} - 1) ELSE task_key END"
    new_dynamic = f"CASE WHEN {position} > 0 THEN substr(task_key, {position} + 1) ELSE '' END"
    if "dynamic_key" in columns:  # a run killed part way split some rows already
        new_key = f"CASE WHEN dynamic_key IS NULL THEN {new_key} ELSE task_key END"
        new_dynamic = f"CASE WHEN dynamic_key IS NULL THEN {new_dynamic} ELSE dynamic_key END"
    split = (
        f"SELECT id, flow_run_id, task_key, {new_key} AS new_key, {new_dynamic} AS new_dynamic "
        "FROM task_run"
    )
    groups = connection.execute(
        sa.text(
            f"SELECT flow_run_id, new_key, new_dynamic, count(*) FROM ({split}) s "
            "GROUP BY flow_run_id, new_key, new_dynamic HAVING count(*) > 1"
        )
    ).all()
    if not groups:
        return None
    # Sorted here, not by the database: every dialect orders text and UUIDs its own way.
    ordered = sorted(groups, key=lambda g: (_uuid(g[0]).hex, str(g[1]), str(g[2])))
    examples = []
    for flow_run_id, key, dynamic, _ in ordered[:EXAMPLES]:
        rows = connection.execute(
            sa.text(
                f"SELECT id, task_key FROM ({split}) s WHERE flow_run_id = :run "
                "AND new_key = :key AND new_dynamic = :dynamic"
            ),
            {"run": flow_run_id, "key": key, "dynamic": dynamic},
        ).all()
        named = sorted((str(task_key), _uuid(row_id)) for row_id, task_key in rows)
        pair = " and ".join(f"task run {row} (task_key {key!r})" for key, row in named)
        examples.append(f"flow run {_uuid(flow_run_id)}: {pair}")
    more = f"; and {len(groups) - EXAMPLES:,} more group(s)" if len(groups) > EXAMPLES else ""
    b_position = dialect.text_position(":", "b.task_key")
    find = (
        "SELECT a.flow_run_id, a.id, a.task_key, b.id, b.task_key FROM task_run a JOIN "
        f"task_run b ON b.flow_run_id = a.flow_run_id AND {b_position} > 0 AND a.task_key = "
        f"substr(b.task_key, 1, {b_position} - 1) AND substr(b.task_key, {b_position} + 1) = '' "
        f"WHERE {dialect.text_position(':', 'a.task_key')} = 0"
    )
    return Blocked(
        rows=sum(int(group[3]) for group in groups),
        examples=(
            f"{len(groups):,} group(s) of task runs in {len({str(g[0]) for g in groups}):,} "
            "flow run(s) would get the same (task_key, dynamic_key) once split at the first "
            f"':', e.g. {'; '.join(examples)}{more}"
        ),
        fix=(
            "Rename (or delete) one task run of each pair so that no key 'k' sits beside "
            f"'k:' in one flow run, then upgrade again; find them with: {find}"
        ),
    )


# --- b2a6d8f0c4e3: log.flow_run_id NOT NULL -----------------------------------------------


def log_lines_without_a_run(
    connection: Connection, dialect: Dialect, tables: frozenset[str]
) -> Blocked | None:
    """Log lines that name neither a flow run nor a task run: NOT NULL has no value for them.

    Lines of a task run get their flow run from a1f5c7e9b3d2 (a trigger and a backfill),
    which no earlier revision changes; lines with neither run stay empty.
    """
    import sqlalchemy as sa

    if "log" not in tables:
        return None
    # id and timestamp only: the plan may start before 1b5e8c2f7d43 renamed logger to name.
    find = "SELECT id, timestamp FROM log WHERE flow_run_id IS NULL AND task_run_id IS NULL"
    count = int(connection.execute(sa.text(f"SELECT count(*) FROM ({find}) orphans")).scalar() or 0)
    if count == 0:
        return None
    rows = connection.execute(sa.text(find)).all()
    named = sorted((str(row[1]), _uuid(row[0]).hex) for row in rows)[:EXAMPLES]
    return Blocked(
        rows=count,
        examples=(
            f"{count:,} log line(s) name no flow run and no task run, e.g. "
            + ", ".join(f"line {uuid.UUID(line)} of {when}" for when, line in named)
        ),
        fix=(
            "Delete them (no run lists them and no clean removes them) or set their "
            f"flow_run_id, then upgrade again; find them with: {find}"
        ),
    )


def _uuid(value: Any) -> uuid.UUID:
    """A UUID as any dialect returns it (a ``UUID``, or its text with or without dashes)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


#: Revision id -> the check of the data its upgrade converts.
PRECONDITIONS: dict[str, Check] = {
    "4e2b6f8c1a97": split_task_keys,
    "b2a6d8f0c4e3": log_lines_without_a_run,
}
