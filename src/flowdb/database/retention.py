"""Retention: delete finished flow runs older than a cut-off, with everything of theirs.

``flowdb database clean --older-than 30d`` and the server's retention service
(``server/retention.py``) both call ``clean``. A run is *expired* when it is in a
terminal state (COMPLETED, FAILED, CANCELLED, CRASHED: the states that set
``end_time``, stored as ``ended_at``) and its end time is before the cut-off. Deleting
it deletes its task runs, both state histories and its logs (the tables whose foreign keys CASCADE);
artifacts are kept, unlinked (their foreign keys SET NULL: an artifact outlives its run).

How it stays safe beside a live API and cheap on a big database:

* **Bounded batches by key range.** Expired runs are walked in ``(ended_at, id)``
  order over ``ix_flow_run__ended_at``; each batch takes the next ``batch_size`` runs
  after the last one seen, so no batch scans the table, and each is one short
  transaction that deletes the batch's rows child tables first (every foreign key it
  deletes through has an index: ``lint``'s ``fk-without-index`` rule).
* **Never a run the API is changing.** The batch's runs and their task runs are locked
  with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB): a run whose state, task runs,
  logs or states another transaction is writing is skipped, not waited for, and left
  for the next clean. SQLite's one writer (``BEGIN IMMEDIATE``) serialises it with
  the API instead.
* **Resumable without a state table.** What a batch deleted is gone when it commits;
  a clean killed part way is continued by running it again.
* **No migration lock, but the schema at head.** It refuses (one line) a database
  that is not at head or has a migration part way through, whose tables it cannot
  trust; two cleaners never run at once (``Dialect.cleaner_lock``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowdb.errors import DatabaseBusyError, SchemaNotAtHeadError, UsageError
from flowdb.settings import LONGEST_RETENTION_DAYS

if TYPE_CHECKING:
    import sqlalchemy as sa

    from flowdb.database.target import Database

#: The states that end a run (``server/states.py`` sets ``end_time`` on entering them).
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
#: The tables a clean deletes from, children first, as the summary lists them.
TABLES = ("log", "task_run_state", "task_run", "flow_run_state", "flow_run")
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_PER_DAY = {"d": 1, "h": 24, "m": 24 * 60}


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m`` -> a timedelta; anything else raises ``UsageError`` (exit 2)."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise UsageError(
            f"--older-than {text!r} is not a duration; write a positive whole number of "
            "days, hours or minutes, like 30d, 12h or 90m."
        )
    number, unit = int(match.group(1)), match.group(2)
    # A longer one put the cutoff before the year 1: a traceback instead of a cutoff.
    if number > LONGEST_RETENTION_DAYS * _PER_DAY[unit]:
        raise UsageError(
            f"--older-than {text!r} reaches back more than {LONGEST_RETENTION_DAYS} days "
            f"(100 years); write at most {LONGEST_RETENTION_DAYS}d."
        )
    return dt.timedelta(**{_UNITS[unit]: number})


@dataclass
class CleanProgress:
    """Where a clean stands: expired runs found at the start, rows deleted so far."""

    total_runs: int
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    unlinked_artifacts: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    space: str = ""
    #: Seconds spent deleting each table's rows ("artifact": clearing their links).
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys((*TABLES, "artifact"), 0.0)
    )

    @contextmanager
    def timing(self, table: str) -> Iterator[None]:
        """Add the time the block takes to ``seconds[table]``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[table] += time.monotonic() - started

    @property
    def runs_done(self) -> int:
        """Flow runs deleted so far."""
        return self.deleted["flow_run"]

    @property
    def rows_done(self) -> int:
        """Rows deleted so far, all tables together."""
        return sum(self.deleted.values())

    def seconds_left(self) -> float | None:
        """An estimate from the rate so far (``None`` before the first batch)."""
        if not self.runs_done:
            return None
        elapsed = time.monotonic() - self.started
        return max(self.total_runs - self.runs_done, 0) * elapsed / self.runs_done


def require_cleanable(database: Database) -> None:
    """Refuse a database whose schema is not at head, or has a migration part way through."""
    status = database.status()
    status.require_known(database)
    if status.in_progress:
        raise SchemaNotAtHeadError(
            f"Cannot clean {database.describe()}: a migration is part way through "
            f"({status.describe_progress()}); run 'flowdb database upgrade' first."
        )
    if not status.at_head:
        raise SchemaNotAtHeadError(
            f"Cannot clean {database.describe()}: it is at {status.current or 'base'}, not at "
            f"head {status.head}; run 'flowdb database upgrade' first."
        )


def _tables() -> dict[str, sa.Table]:
    from flowdb.database.orm_models import Base

    return {name: Base.metadata.tables[name] for name in (*TABLES, "artifact")}


def _expired(cutoff: dt.datetime) -> Any:
    """The condition selecting expired flow runs."""
    run = _tables()["flow_run"]
    return run.c.state_type.in_(TERMINAL_STATES) & (run.c.ended_at < cutoff)


def count_expired(database: Database, cutoff: dt.datetime) -> dict[str, int]:
    """Rows a clean at ``cutoff`` would delete, per table (plus ``artifact``: unlinked)."""
    import sqlalchemy as sa

    t = _tables()
    runs = sa.select(t["flow_run"].c.id).where(_expired(cutoff))
    tasks = sa.select(t["task_run"].c.id).where(t["task_run"].c.flow_run_id.in_(runs))
    log, artifact = t["log"], t["artifact"]
    queries = {
        "log": sa.select(sa.func.count()).where(
            log.c.flow_run_id.in_(runs) | log.c.task_run_id.in_(tasks)
        ),
        "task_run_state": sa.select(sa.func.count()).where(
            t["task_run_state"].c.task_run_id.in_(tasks)
        ),
        "task_run": sa.select(sa.func.count()).where(t["task_run"].c.flow_run_id.in_(runs)),
        "flow_run_state": sa.select(sa.func.count()).where(
            t["flow_run_state"].c.flow_run_id.in_(runs)
        ),
        "flow_run": sa.select(sa.func.count()).where(_expired(cutoff)),
        "artifact": sa.select(sa.func.count()).where(
            artifact.c.flow_run_id.in_(runs) | artifact.c.task_run_id.in_(tasks)
        ),
    }
    engine = database.engine("flowdb-clean")
    try:
        with database.errors(), engine.connect() as connection:
            return {name: int(connection.execute(q).scalar() or 0) for name, q in queries.items()}
    finally:
        engine.dispose()


def clean(
    database: Database,
    cutoff: dt.datetime,
    *,
    batch_size: int,
    on_batch: Callable[[CleanProgress], None] | None = None,
    reclaim: bool = True,
) -> CleanProgress:
    """Delete the runs expired at ``cutoff`` in batches; return what was deleted.

    Raises ``DatabaseBusyError`` when another cleaner holds the cleaner lock.
    """
    import sqlalchemy as sa

    require_cleanable(database)
    with database.errors(), database.dialect.cleaner_lock() as held:
        if not held:
            raise DatabaseBusyError(
                f"Another clean of {database.describe()} is running; wait for it to end."
            )
        run = _tables()["flow_run"]
        engine = database.engine("flowdb-clean")
        try:
            with engine.connect() as connection:
                total = connection.execute(
                    sa.select(sa.func.count()).where(_expired(cutoff))
                ).scalar()
                connection.commit()
                progress = CleanProgress(total_runs=int(total or 0))
                after: tuple[Any, Any] | None = None
                while True:
                    condition = _expired(cutoff)
                    if after is not None:
                        condition &= (run.c.ended_at > after[0]) | (
                            (run.c.ended_at == after[0]) & (run.c.id > after[1])
                        )
                    rows = connection.execute(
                        sa.select(run.c.id, run.c.ended_at)
                        .where(condition)
                        .order_by(run.c.ended_at, run.c.id)
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    ).all()
                    if not rows:
                        connection.commit()
                        break
                    after = (rows[-1].ended_at, rows[-1].id)
                    _delete_batch(connection, [row.id for row in rows], progress)
                    connection.commit()
                    progress.batches += 1
                    if on_batch is not None:
                        on_batch(progress)
        finally:
            engine.dispose()
        if reclaim and progress.runs_done:
            try:
                progress.space = database.dialect.reclaim_space(list(TABLES))
            except sa.exc.SQLAlchemyError as error:  # the rows are deleted all the same
                reason = str(getattr(error, "orig", None) or error).splitlines()[0]
                progress.space = f"space not reclaimed now ({reason})"
    return progress


def _delete_batch(connection: sa.Connection, run_ids: list[Any], progress: CleanProgress) -> None:
    """Delete the locked runs ``run_ids`` and what belongs to them, children first.

    Runs with a task run another transaction holds are left out (and stay locked by
    this transaction only until it commits).
    """
    import sqlalchemy as sa

    t = _tables()
    task = t["task_run"]
    all_tasks = connection.execute(
        sa.select(task.c.id, task.c.flow_run_id).where(task.c.flow_run_id.in_(run_ids))
    ).all()
    locked = set(
        connection.execute(
            sa.select(task.c.id)
            .where(task.c.flow_run_id.in_(run_ids))
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    busy = {row.flow_run_id for row in all_tasks if row.id not in locked}
    run_ids = [run_id for run_id in run_ids if run_id not in busy]
    task_ids = [row.id for row in all_tasks if row.flow_run_id not in busy]
    if not run_ids:
        return
    log, artifact = t["log"], t["artifact"]
    deleted = progress.deleted
    timing = progress.timing
    for ids, column in ((task_ids, artifact.c.task_run_id), (run_ids, artifact.c.flow_run_id)):
        for chunk in _chunks(ids):
            with timing("artifact"):
                progress.unlinked_artifacts += connection.execute(
                    sa.update(artifact).where(column.in_(chunk)).values({column.key: None})
                ).rowcount
    for chunk in _chunks(task_ids):
        with timing("log"):
            deleted["log"] += connection.execute(
                sa.delete(log).where(log.c.task_run_id.in_(chunk))
            ).rowcount
        state = t["task_run_state"]
        with timing("task_run_state"):
            deleted["task_run_state"] += connection.execute(
                sa.delete(state).where(state.c.task_run_id.in_(chunk))
            ).rowcount
        with timing("task_run"):
            deleted["task_run"] += _delete_by_key(connection, task, chunk)
    with timing("log"):
        deleted["log"] += connection.execute(
            sa.delete(log).where(log.c.flow_run_id.in_(run_ids))
        ).rowcount
    state = t["flow_run_state"]
    with timing("flow_run_state"):
        deleted["flow_run_state"] += connection.execute(
            sa.delete(state).where(state.c.flow_run_id.in_(run_ids))
        ).rowcount
    with timing("flow_run"):
        deleted["flow_run"] += _delete_by_key(connection, t["flow_run"], run_ids)


def _delete_by_key(connection: sa.Connection, table: sa.Table, ids: list[Any]) -> int:
    """Delete the rows of ``table`` with these ids, one key lookup each; how many went.

    One ``DELETE ... WHERE id = ?`` per row, never ``id IN (...)``: InnoDB may scan a
    small table for an ``IN`` list, and a scan locks every row it reads, so the clean
    would wait for the row of a run the API is changing (which it skipped) until the
    lock wait times out. A key lookup locks only the row it deletes, which this
    transaction already holds (``FOR UPDATE SKIP LOCKED``), so nobody else deletes it
    and the count is ``len(ids)``.
    """
    import sqlalchemy as sa

    if ids:
        statement = sa.delete(table).where(table.c.id == sa.bindparam("row_id"))
        connection.execute(statement, [{"row_id": row_id} for row_id in ids])
    return len(ids)


def _chunks(ids: list[Any], size: int = 5_000) -> list[list[Any]]:
    """``ids`` in lists short enough for every driver's parameter limit."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]
