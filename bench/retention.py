"""A 30-day retention simulation: does the database stop growing with a daily clean?

``python -m bench.retention [--days 30] [--keep 7] [--runs-per-day 500] [--png PATH]``

For each dialect (SQLite and PostgreSQL by default), a new database at head gets, day
after simulated day, a fixed number of finished flow runs (their end times spread over
that day) with task runs, states and logs; after each day the clean runs as the daily
job would (``retention.clean`` with the cut-off ``end of day - keep days``, the same
call as ``flowdb database clean --older-than 7d``, space given back after it). Each day
it measures the database's size (SQLite: the file after a WAL checkpoint; PostgreSQL:
the tables with their indexes and TOAST) and the p95 of the API's flow run list query
(``GET /api/flow_runs``: newest expected start first, 200 rows).

The database plateaus when the size on the last day is within 1.2x of the size on day
``keep + 3`` (day 10 for a 7-day retention): from then on each clean frees what a day
adds. It prints a table and, when matplotlib is installed (``pip install ".[bench]"``),
draws the two curves into a PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.databases import Scratch

#: The size on the last day may be at most this many times the size on day keep + 3.
PLATEAU_FACTOR = 1.2
_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Day:
    """What one simulated day ended with."""

    day: int
    runs_kept: int
    runs_deleted: int
    clean_seconds: float
    size_bytes: int
    list_p95_ms: float


def plateau_day(keep: int) -> int:
    """The day from which the size should stay flat: ``keep`` days full, plus margin."""
    return keep + 3


def plateau_ratio(days: list[Day], keep: int) -> float:
    """Size on the last day over the size on ``plateau_day(keep)``."""
    reference = days[plateau_day(keep) - 1].size_bytes
    return days[-1].size_bytes / reference


def simulate(
    url: str, *, days: int, keep: int, runs_per_day: int, tasks: int = 4, logs: int = 20
) -> list[Day]:
    """Run the simulation on the empty database at ``url``; one ``Day`` per simulated day."""
    from flowdb.database.interface import ensure_schema
    from flowdb.database.retention import clean
    from flowdb.database.target import Database

    database = Database.from_url(url)
    ensure_schema(database, migrate=True)
    engine = database.engine("flowdb-bench")
    flow_id = uuid.uuid4()
    results = []
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(_table("flow")), [{"id": flow_id, "name": "bench-retention"}]
            )
        for day in range(1, days + 1):
            day_start = _START + dt.timedelta(days=day - 1)
            with engine.begin() as connection:
                _insert_day(connection, flow_id, day_start, runs_per_day, tasks, logs)
            started = time.perf_counter()
            progress = clean(database, day_start + dt.timedelta(days=1 - keep), batch_size=500)
            seconds = time.perf_counter() - started
            with engine.connect() as connection:
                kept = int(
                    connection.execute(
                        sa.select(sa.func.count()).select_from(_table("flow_run"))
                    ).scalar_one()
                )
                connection.commit()
            results.append(
                Day(
                    day,
                    kept,
                    progress.runs_done,
                    seconds,
                    _size(database, engine),
                    _list_p95(engine),
                )
            )
    finally:
        engine.dispose()
    return results


def _table(name: str) -> sa.Table:
    from flowdb.database.orm_models import Base

    return Base.metadata.tables[name]


def _insert_day(
    connection: sa.Connection,
    flow_id: uuid.UUID,
    day_start: dt.datetime,
    runs: int,
    tasks: int,
    logs: int,
) -> None:
    """``runs`` COMPLETED runs that ended during the day, each with its children."""
    rows: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("flow_run", "flow_run_state", "task_run", "task_run_state", "log")
    }
    spacing = dt.timedelta(days=1) / max(runs, 1)
    for n in range(runs):
        run_id = uuid.uuid4()
        end = day_start + spacing * n
        start = end - dt.timedelta(minutes=5)
        rows["flow_run"].append(
            {
                "id": run_id,
                "flow_id": flow_id,
                "name": f"run-{day_start:%j}-{n}",
                "state_type": "COMPLETED",
                "state_name": "Completed",
                "expected_start_time": start,
                "start_time": start,
                "ended_at": end,
            }
        )
        for when, state in ((start, "RUNNING"), (end, "COMPLETED")):
            rows["flow_run_state"].append(
                {
                    "id": uuid.uuid4(),
                    "flow_run_id": run_id,
                    "type": state,
                    "name": state.title(),
                    "timestamp": when,
                }
            )
        task_ids = [uuid.uuid4() for _ in range(tasks)]
        for k, task_id in enumerate(task_ids):
            rows["task_run"].append(
                {
                    "id": task_id,
                    "flow_run_id": run_id,
                    "task_key": f"task-{k}",
                    "dynamic_key": "0",
                    "name": f"task-{k}",
                    "state_type": "COMPLETED",
                    "start_time": start,
                    "ended_at": end,
                }
            )
            rows["task_run_state"].append(
                {
                    "id": uuid.uuid4(),
                    "task_run_id": task_id,
                    "type": "COMPLETED",
                    "name": "Completed",
                    "timestamp": end,
                }
            )
        for k in range(logs):
            rows["log"].append(
                {
                    "id": uuid.uuid4(),
                    "flow_run_id": run_id,
                    "task_run_id": task_ids[k % tasks] if tasks and k % 2 else None,
                    "name": "bench",
                    "level": 20,
                    "timestamp": start + dt.timedelta(seconds=k),
                    "message": f"line {k} of a run that does ordinary work " * 2,
                }
            )
    for name, values in rows.items():
        for first in range(0, len(values), 5_000):
            connection.execute(sa.insert(_table(name)), values[first : first + 5_000])


def _size(database: Any, engine: sa.Engine) -> int:
    """Bytes the database takes: the SQLite file, or PostgreSQL's flowdb tables."""
    path = database.dialect.backup_file()
    if path is not None:  # SQLite: the WAL folded into the file first, outside a transaction
        import sqlite3

        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return int(path.stat().st_size)
    with engine.connect() as connection:
        total = connection.execute(
            sa.text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "WHERE c.relname IN ('flow_run', 'flow_run_state', 'task_run', "
                "'task_run_state', 'log', 'artifact') "
                "AND c.relnamespace = current_schema()::regnamespace"
            )
        ).scalar_one()
        connection.commit()
        return int(total)


def _list_p95(engine: sa.Engine, samples: int = 40) -> float:
    """p95 in milliseconds of the API's flow run list query (routes/flow_runs.py)."""
    run = _table("flow_run")
    query = sa.select(run).order_by(run.c.expected_start_time.desc(), run.c.id).limit(200)
    times = []
    with engine.connect() as connection:
        for _ in range(samples):
            started = time.perf_counter()
            connection.execute(query).all()
            times.append((time.perf_counter() - started) * 1000)
        connection.commit()
    return statistics.quantiles(times, n=20)[-1]


def render(results: dict[str, list[Day]], keep: int) -> str:
    """The Markdown table of every dialect's days, and the plateau verdicts."""
    names = list(results)
    header = "| day | " + " | ".join(
        f"{n} runs kept | {n} deleted | {n} clean s | {n} MiB | {n} list p95 ms" for n in names
    )
    lines = [header + " |", "|" + " ---: |" * (1 + 5 * len(names))]
    for index in range(len(next(iter(results.values())))):
        cells = [str(index + 1)]
        for name in names:
            day = results[name][index]
            cells += [
                f"{day.runs_kept:,}",
                f"{day.runs_deleted:,}",
                f"{day.clean_seconds:.2f}",
                f"{day.size_bytes / 2**20:.1f}",
                f"{day.list_p95_ms:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    for name, days in results.items():
        ratio = plateau_ratio(days, keep)
        verdict = "plateau" if ratio <= PLATEAU_FACTOR else "STILL GROWING"
        lines.append(
            f"\n{name}: size day {len(days)} / day {plateau_day(keep)} = {ratio:.2f} "
            f"(limit {PLATEAU_FACTOR}): {verdict}"
        )
    return "\n".join(lines)


def draw(results: dict[str, list[Day]], path: Path) -> bool:
    """Draw size and list p95 per day into ``path``; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (size_axis, p95_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, days in results.items():
        x = [day.day for day in days]
        size_axis.plot(x, [day.size_bytes / 2**20 for day in days], marker="o", label=name)
        p95_axis.plot(x, [day.list_p95_ms for day in days], marker="o", label=name)
    size_axis.set(title="database size", xlabel="day", ylabel="MiB")
    p95_axis.set(title="flow run list p95", xlabel="day", ylabel="ms")
    for axis in (size_axis, p95_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> None:
    """Run the simulation on each dialect asked for; print the table; draw the PNG."""
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", type=int, default=7, help="the clean's --older-than, in days")
    parser.add_argument("--runs-per-day", type=int, default=500)
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--png", type=Path, default=Path("bench/retention.png"))
    args = parser.parse_args(argv)
    if args.days < plateau_day(args.keep):
        parser.error(f"--days must be at least --keep + 3 ({plateau_day(args.keep)})")
    scratch = Scratch()
    results: dict[str, list[Day]] = {}
    try:
        for name in args.dialects.split(","):
            url = scratch.new_url(name)
            results[name] = simulate(
                url, days=args.days, keep=args.keep, runs_per_day=args.runs_per_day
            )
            scratch.drop(url)
    finally:
        scratch.close()
    print(
        f"{args.runs_per_day} runs/day (4 task runs, 20 log lines, 2+4 states each), "
        f"clean --older-than {args.keep}d after each day\n"
    )
    print(render(results, args.keep))
    if draw(results, args.png):
        print(f"\nChart: {args.png}")


if __name__ == "__main__":
    main()
