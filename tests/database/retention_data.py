"""Rows for the retention tests: flow runs old and new, finished and not, with children.

``seed`` writes, under one flow, runs of each kind the clean must tell apart, each
with two task runs (two states each), two flow run states, logs of the run and of
its task runs, and one artifact linked to the run and one of its task runs:

* ``expired``: COMPLETED/FAILED/CANCELLED/CRASHED, ended 10 days ago (deleted by 7d);
* ``recent``: COMPLETED, ended an hour ago (kept);
* ``active``: RUNNING, started 10 days ago, no end (kept);
* ``rescheduled``: SCHEDULED again after a failure 10 days ago, ``end_time`` kept (kept).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from flowdb.database.column_types import StateType
from flowdb.database.orm_models import Base
from tests.dbtools import sync_engine

TERMINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
CHILD_TABLES = ("task_run", "task_run_state", "flow_run_state", "log")


def seed(
    url: str, *, expired: int, recent: int = 3, active: int = 2, rescheduled: int = 2
) -> dict[str, list[Any]]:
    """Write the runs (see the module docstring); return each kind's run ids."""
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(days=10)
    kinds: dict[str, tuple[int, StateType | None, dt.datetime | None]] = {
        "expired": (expired, None, old),
        "recent": (recent, StateType.COMPLETED, now - dt.timedelta(hours=1)),
        "active": (active, StateType.RUNNING, None),
        "rescheduled": (rescheduled, StateType.SCHEDULED, old),
    }
    t = Base.metadata.tables
    flow_id = uuid.uuid4()
    rows: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("flow_run", *CHILD_TABLES, "artifact")
    }
    ids: dict[str, list[Any]] = {}
    for kind, (count, state, end) in kinds.items():
        ids[kind] = []
        for n in range(count):
            run_id = uuid.uuid4()
            ids[kind].append(run_id)
            run_state = state or TERMINAL[n % len(TERMINAL)]
            rows["flow_run"].append(
                {
                    "id": run_id,
                    "flow_id": flow_id,
                    "name": f"{kind}-{n}",
                    "state_type": run_state,
                    "state_name": run_state.value.title(),
                    "expected_start_time": old,
                    "start_time": old,
                    "ended_at": end,
                }
            )
            for k in range(2):
                rows["flow_run_state"].append(
                    {
                        "id": uuid.uuid4(),
                        "flow_run_id": run_id,
                        "type": run_state,
                        "name": "s",
                        "timestamp": old + dt.timedelta(seconds=k),
                    }
                )
                rows["log"].append(
                    {
                        "id": uuid.uuid4(),
                        "flow_run_id": run_id,
                        "task_run_id": None,
                        "name": "l",
                        "level": 20,
                        "message": "run line",
                        "timestamp": old,
                    }
                )
            task_ids = []
            for k in range(2):
                task_id = uuid.uuid4()
                task_ids.append(task_id)
                rows["task_run"].append(
                    {
                        "id": task_id,
                        "flow_run_id": run_id,
                        "task_key": f"t{k}",
                        "dynamic_key": "0",
                        "name": f"t{k}",
                        "state_type": StateType.COMPLETED,
                        "ended_at": end,
                    }
                )
                for j in range(2):
                    rows["task_run_state"].append(
                        {
                            "id": uuid.uuid4(),
                            "task_run_id": task_id,
                            "type": StateType.COMPLETED,
                            "name": "s",
                            "timestamp": old + dt.timedelta(seconds=j),
                        }
                    )
                # two lines of the task run (a line names its flow run since b2a6d8f0c4e3)
                rows["log"].append(
                    {
                        "id": uuid.uuid4(),
                        "flow_run_id": run_id,
                        "task_run_id": task_id,
                        "name": "l",
                        "level": 20,
                        "message": "task line",
                        "timestamp": old,
                    }
                )
                rows["log"].append(
                    {
                        "id": uuid.uuid4(),
                        "flow_run_id": run_id,
                        "task_run_id": task_id,
                        "name": "l",
                        "level": 20,
                        "message": "task line 2",
                        "timestamp": old,
                    }
                )
            rows["artifact"].append(
                {
                    "id": uuid.uuid4(),
                    "key": f"a-{kind}-{n}",
                    "flow_run_id": run_id,
                    "task_run_id": task_ids[0],
                }
            )
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(t["flow"]), [{"id": flow_id, "name": f"f-{flow_id.hex[:8]}"}]
            )
            for name in ("flow_run", *CHILD_TABLES, "artifact"):
                for start in range(0, len(rows[name]), 2_000):
                    connection.execute(sa.insert(t[name]), rows[name][start : start + 2_000])
    finally:
        engine.dispose()
    return ids


def counts(url: str) -> dict[str, int]:
    """Rows per table of the schema, and the orphans a broken clean would leave.

    Every insert of ``seed`` names every column it writes in every row: an executemany
    takes its columns from the first row.
    """
    engine = sync_engine(url)
    queries = {
        name: f"SELECT count(*) FROM {name}"
        for name in ("flow", "flow_run", *CHILD_TABLES, "artifact")
    }
    orphan = "SELECT count(*) FROM {} WHERE {} NOT IN (SELECT id FROM {})"
    queries |= {
        "orphan task_run": orphan.format("task_run", "flow_run_id", "flow_run"),
        "orphan task_run_state": orphan.format("task_run_state", "task_run_id", "task_run"),
        "orphan flow_run_state": orphan.format("flow_run_state", "flow_run_id", "flow_run"),
        "orphan log": "SELECT count(*) FROM log "
        "WHERE (flow_run_id IS NULL AND task_run_id IS NULL) "
        "OR flow_run_id NOT IN (SELECT id FROM flow_run) "
        "OR task_run_id NOT IN (SELECT id FROM task_run)",
        "linked artifact": "SELECT count(*) FROM artifact WHERE flow_run_id IS NOT NULL",
    }
    try:
        with engine.connect() as connection:
            return {
                name: int(connection.execute(sa.text(q)).scalar() or 0)
                for name, q in queries.items()
            }
    finally:
        engine.dispose()


def remaining(url: str, run_ids: list[Any]) -> int:
    """How many of ``run_ids`` are still in ``flow_run``."""
    run = Base.metadata.tables["flow_run"]
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            found = 0
            for start in range(0, len(run_ids), 1_000):
                chunk = run_ids[start : start + 1_000]
                found += int(
                    connection.execute(
                        sa.select(sa.func.count()).where(run.c.id.in_(chunk))
                    ).scalar()
                    or 0
                )
            return found
    finally:
        engine.dispose()
