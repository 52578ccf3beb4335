"""Each data migration: seed the old schema, upgrade, check every value; downgrade, check again.

Rows are seeded with raw SQL in the schema of the revision before the migration, and
counted before and after every step: a data migration must never lose or duplicate a
row. Every test runs on SQLite and PostgreSQL, once with the shipped batch size (one
batch) and once with batches of 7 rows, so that the key-range batching is exercised.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.events import Progress
from flowdb.database.history import load_history
from flowdb.settings import Settings
from tests.dbtools import revision_of, sync_engine

BACKFILL = "3d1a5e7b9f86"  # flow_run.expected_start_time
SPLIT = "4e2b6f8c1a97"  # task_run.task_key -> task_key + dynamic_key
STATES = "5f3c7a9d2b18"  # flow run current state -> flow_run_state
SCHEDULES = "7b5e9c2f4d3a"  # deployment.schedule -> deployment_schedule
FILL_LOG_RUN = "a1f5c7e9b3d2"  # log.flow_run_id filled from the task run (expand)
LOG_RUN_NOT_NULL = "b2a6d8f0c4e3"  # log.flow_run_id NOT NULL (contract)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
PARIS_SUMMER = dt.timezone(dt.timedelta(hours=2))


# --- raw access in each dialect's storage form -----------------------------------------


class Raw:
    """Raw SQL on a test database, with values in the form each dialect stores them.

    SQLite keeps UUIDs as 32-character hex strings and timestamps as naive UTC text;
    PostgreSQL takes ``uuid.UUID`` and aware datetimes. JSON goes in as JSON text.
    """

    def __init__(self, url: str) -> None:
        self.engine = sync_engine(url)
        self.is_sqlite = url.startswith("sqlite")

    def stored(self, value: Any) -> Any:
        """``value`` as a bound parameter for this dialect."""
        if isinstance(value, uuid.UUID):
            return value.hex if self.is_sqlite else value
        if isinstance(value, dt.datetime):
            utc = value.astimezone(dt.UTC)
            return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if self.is_sqlite else utc
        if isinstance(value, dict | list):
            return json.dumps(value)
        return value

    def insert(self, table: str, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            for row in rows:
                columns = ", ".join(row)
                values = ", ".join(f":{name}" for name in row)
                connection.execute(
                    sa.text(f"INSERT INTO {table} ({columns}) VALUES ({values})"),
                    {name: self.stored(value) for name, value in row.items()},
                )

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(sql), {k: self.stored(v) for k, v in params.items()})

    def rows(self, sql: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(sql))]

    def count(self, table: str) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())

    def columns(self, table: str) -> set[str]:
        return {column["name"] for column in sa.inspect(self.engine).get_columns(table)}

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())


def uid(value: Any) -> uuid.UUID:
    """A UUID read back from either dialect."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def utc(value: Any) -> dt.datetime:
    """A timestamp read back from either dialect, as an aware UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime), value
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def document(value: Any) -> Any:
    """A JSON document read back from either dialect (text on SQLite, decoded on PostgreSQL)."""
    return json.loads(value) if isinstance(value, str) else value


def by_id(rows: list[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
    return {uid(row["id"]): row for row in rows}


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def raw(configured: str) -> Iterator[Raw]:
    database = Raw(configured)
    yield database
    database.engine.dispose()


@pytest.fixture(params=[None, 7], ids=["shipped-batch-size", "batches-of-7"])
def batch_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The rows per data-migration batch for this test."""
    if request.param is not None:
        monkeypatch.setenv("FLOWDB_MIGRATION_BATCH_SIZE", str(request.param))
    return Settings().migration_batch_size


@contextmanager
def counting_batches() -> Iterator[list[str]]:
    """Record the key-range queries (one per batch) run by the migrations in the block."""
    queries: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "LIMIT 1 OFFSET" in statement:
            queries.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield queries
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def upgrade_to(raw: Raw, revision: str, rows: int, batch_size: int) -> None:
    """Upgrade one step to the data migration ``revision``, checking that it ran in batches."""
    with counting_batches() as batches:
        alembic_upgrade(revision)
    assert revision_of(str(raw.engine.url)) == revision
    assert len(batches) >= math.ceil(rows / batch_size)
    if batch_size < rows:
        assert len(batches) >= 2


def downgrade_from(raw: Raw, revision: str) -> None:
    alembic_downgrade("-1")
    previous = next(r for r in load_history().revisions if r.id == revision).down_revision
    assert revision_of(str(raw.engine.url)) == previous


def upgrade_to_revision_before(revision: str) -> None:
    previous = next(r for r in load_history().revisions if r.id == revision).down_revision
    assert previous is not None
    alembic_upgrade(previous)


def seed_flow(raw: Raw, name: str = "etl") -> uuid.UUID:
    flow_id = uuid.uuid4()
    raw.insert("flow", {"id": flow_id, "name": name})
    return flow_id


# --- 3d1a5e7b9f86: backfill flow_run.expected_start_time -------------------------------


def test_backfill_expected_start_time(raw: Raw, batch_size: int) -> None:
    upgrade_to_revision_before(BACKFILL)
    flow_id = seed_flow(raw)
    runs: list[dict[str, Any]] = []
    for i in range(45):
        run: dict[str, Any] = {"id": uuid.uuid4(), "flow_id": flow_id, "name": f"run-{i}"}
        if i % 5 != 4:  # every fifth run keeps the server default for created
            run["created"] = T0 + dt.timedelta(minutes=i)
        if i % 3 == 0:
            run["start_time"] = T0 + dt.timedelta(hours=i, seconds=7)
        elif i % 3 == 1:  # started before it was created, in another time zone
            run["start_time"] = (T0 - dt.timedelta(days=1)).astimezone(PARIS_SUMMER)
        runs.append(run)
    raw.insert("flow_run", *runs)
    before = by_id(raw.rows("SELECT id, created, start_time FROM flow_run"))
    assert len(before) == 45

    upgrade_to(raw, BACKFILL, rows=45, batch_size=batch_size)

    after = by_id(raw.rows("SELECT id, created, start_time, expected_start_time FROM flow_run"))
    assert after.keys() == before.keys()
    for run in runs:
        row = after[run["id"]]
        if "start_time" in run:
            assert utc(row["expected_start_time"]) == run["start_time"]
        else:
            assert utc(row["expected_start_time"]) == utc(before[run["id"]]["created"])
        assert row["created"] == before[run["id"]]["created"]
        assert row["start_time"] == before[run["id"]]["start_time"]

    downgrade_from(raw, BACKFILL)

    assert "expected_start_time" not in raw.columns("flow_run")
    assert by_id(raw.rows("SELECT id, created, start_time FROM flow_run")) == before


# --- 4e2b6f8c1a97: split task_run.task_key ---------------------------------------------

#: (flow run, old task_key) pairs named by the migration's docstring, plus fillers below.
EDGE_TASK_KEYS = [
    (0, "plain"),  # no ':' -> dynamic_key ''
    (0, "t:0"),  # two calls of one task share task_key "t" afterwards
    (0, "t:1"),
    (0, "a:b:c"),  # only the first ':' splits
    (0, "tâche-é:1"),  # characters, not bytes
    (0, ":leading"),  # empty task key
    (0, "a"),
    (1, "a:"),  # a bare ':' comes back as "a" on downgrade (same run would collide with "a")
    (1, "x:"),
]


def split(old_key: str) -> tuple[str, str]:
    """What the migration does to a task_key, per its docstring."""
    key, _, dynamic = old_key.partition(":")
    return key, dynamic


def test_tables_bigger_than_a_batch_report_progress(
    raw: Raw, batch_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade_to_revision_before(BACKFILL)
    flow_id = seed_flow(raw)
    raw.insert(
        "flow_run", *({"id": uuid.uuid4(), "flow_id": flow_id, "name": f"r{i}"} for i in range(20))
    )
    with caplog.at_level(logging.INFO, logger="flowdb.migrations"):
        alembic_upgrade(BACKFILL)
    reported = [
        r.getMessage() for r in caplog.records if isinstance(getattr(r, "event", None), Progress)
    ]
    if batch_size >= 20:
        assert reported == []  # one batch: nothing to report
    else:
        # rows done, the share of the table's 20 rows covered, and (until the last) time left
        assert [line.split(", about ")[0] for line in reported] == [
            "flow_run: 7 rows so far (batch 1), 35% of 20 rows",
            "flow_run: 14 rows so far (batch 2), 70% of 20 rows",
            "flow_run: 20 rows so far (batch 3), 100% of 20 rows",
        ]
        assert all(line.endswith(" s left") for line in reported[:2]), reported
        assert not reported[-1].endswith("left")
        events = [getattr(r, "event", None) for r in caplog.records]
        progress = [e for e in events if isinstance(e, Progress)]
        assert [(e.done, e.total) for e in progress] == [(7, 20), (14, 20), (20, 20)]


def test_split_task_key(raw: Raw, batch_size: int) -> None:
    upgrade_to_revision_before(SPLIT)
    flow_id = seed_flow(raw)
    run_ids = [uuid.uuid4(), uuid.uuid4()]
    raw.insert(
        "flow_run",
        *[
            {"id": run_id, "flow_id": flow_id, "name": f"run-{n}", "expected_start_time": T0}
            for n, run_id in enumerate(run_ids)
        ],
    )
    patterns = ["f{i}", "f{i}:{i}", "f{i}:{i}:x", "f{i}:"]
    fillers = [(i % 2, patterns[i % 4].format(i=i)) for i in range(36)]
    tasks: list[dict[str, Any]] = [
        {"id": uuid.uuid4(), "flow_run_id": run_ids[run], "task_key": key, "name": f"task-{n}"}
        for n, (run, key) in enumerate(EDGE_TASK_KEYS + fillers)
    ]
    raw.insert("task_run", *tasks)
    assert raw.count("task_run") == len(tasks) == 45

    upgrade_to(raw, SPLIT, rows=len(tasks), batch_size=batch_size)

    rows = by_id(raw.rows("SELECT id, flow_run_id, task_key, dynamic_key, name FROM task_run"))
    assert len(rows) == len(tasks)
    for task in tasks:
        row = rows[task["id"]]
        assert (row["task_key"], row["dynamic_key"]) == split(task["task_key"])
        assert (uid(row["flow_run_id"]), row["name"]) == (task["flow_run_id"], task["name"])
    with pytest.raises(sa.exc.IntegrityError):  # the new unique key holds
        raw.insert(
            "task_run",
            {"id": uuid.uuid4(), "flow_run_id": run_ids[0], "task_key": "t", "name": "dup"}
            | {"dynamic_key": "0"},
        )

    downgrade_from(raw, SPLIT)

    assert "dynamic_key" not in raw.columns("task_run")
    rows = by_id(raw.rows("SELECT id, flow_run_id, task_key, name FROM task_run"))
    assert len(rows) == len(tasks)
    for task in tasks:
        old_key = task["task_key"]
        expected = old_key[:-1] if old_key.endswith(":") else old_key  # "a:" -> "a"
        assert rows[task["id"]]["task_key"] == expected
        assert rows[task["id"]]["name"] == task["name"]
    with pytest.raises(sa.exc.IntegrityError):  # the old unique key is back
        raw.insert(
            "task_run",
            {"id": uuid.uuid4(), "flow_run_id": run_ids[0], "task_key": "plain", "name": "dup"},
        )


def test_split_task_key_refuses_keys_that_collide_before_changing_anything(
    raw: Raw, configured: str
) -> None:
    """``k`` and ``k:`` in one flow run were distinct keys and become the same (k, '').

    The upgrade refuses before anything changes (exit 7), naming the rows and how many,
    the same way on every dialect and every time; once renamed, it converts them."""
    from flowdb.database.status import PROGRESS_TABLE
    from flowdb.errors import ExitCode, UnconvertibleDataError
    from tests.cli.helpers import fingerprint

    def data_checksums(url: str) -> tuple[str, list[tuple[str, str]]]:
        """The schema, the row counts and every task key (each dialect's fingerprint)."""
        rows = raw.rows("SELECT id, task_key FROM task_run")
        return fingerprint(url), sorted((str(uid(r["id"])), r["task_key"]) for r in rows)

    url = configured
    upgrade_to_revision_before(SPLIT)
    flow_id = seed_flow(raw)
    runs = sorted([uuid.uuid4(), uuid.uuid4()], key=lambda run: run.hex)
    raw.insert(
        "flow_run",
        *[
            {"id": run, "flow_id": flow_id, "name": f"run-{n}", "expected_start_time": T0}
            for n, run in enumerate(runs)
        ],
    )
    keys = [(0, "k"), (0, "k:"), (0, "x"), (0, "x:"), (0, "y:1"), (1, "k"), (1, "k:1")]
    tasks = {(run, key): uuid.uuid4() for run, key in keys}
    raw.insert(
        "task_run",
        *[
            {"id": task, "flow_run_id": runs[run], "task_key": key, "name": key}
            for (run, key), task in tasks.items()
        ],
    )
    before = data_checksums(url)

    messages = []
    for _ in range(2):  # a rerun meets the same data and gives the same answer
        with pytest.raises(UnconvertibleDataError) as refused:
            alembic_upgrade()
        assert refused.value.exit_code == ExitCode.REFUSED
        messages.append(str(refused.value))
        assert revision_of(url) == BACKFILL
        assert "dynamic_key" not in raw.columns("task_run")
        assert PROGRESS_TABLE not in raw.tables()
        assert data_checksums(url) == before
    assert messages[0] == messages[1]
    named = "; ".join(
        f"flow run {runs[0]}: task run {tasks[(0, key)]} (task_key {key!r}) and "
        f"task run {tasks[(0, key + ':')]} (task_key {key + ':'!r})"
        for key in ("k", "x")
    )
    assert "cannot convert 4 row(s) of " in messages[0]
    assert "2 group(s) of task runs in 1 flow run(s) would get the same" in messages[0]
    assert f"e.g. {named}; nothing was changed." in messages[0]
    assert "Rename (or delete) one task run of each pair" in messages[0]

    for key in ("k:", "x:"):
        raw.execute(
            "UPDATE task_run SET task_key = :new WHERE id = :id",
            new=f"{key}renamed",
            id=tasks[(0, key)],
        )
    alembic_upgrade(SPLIT)
    rows = by_id(raw.rows("SELECT id, task_key, dynamic_key FROM task_run"))
    assert (rows[tasks[(0, "k:")]]["task_key"], rows[tasks[(0, "k:")]]["dynamic_key"]) == (
        "k",
        "renamed",
    )
    assert (rows[tasks[(0, "k")]]["task_key"], rows[tasks[(0, "k")]]["dynamic_key"]) == ("k", "")


# --- 5f3c7a9d2b18: flow run states into flow_run_state ---------------------------------


def flow_run_states(i: int) -> dict[str, Any]:
    """The state columns of seeded run ``i``: named, unnamed, stateless and odd messages."""
    kind = i % 4
    if kind == 0:
        return {
            "state_type": "RUNNING",
            "state_name": "Running",
            "state_timestamp": T0 + dt.timedelta(seconds=i),
            "state_message": f"started on worker-{i}",
        }
    if kind == 1:  # no name (named after the type), no timestamp (updated), no message
        return {"state_type": "COMPLETED"}
    if kind == 2:  # no state at all: no history row, no state_id
        return {}
    return {
        "state_type": "FAILED",
        "state_name": "Failed",
        "state_timestamp": (T0 + dt.timedelta(hours=i)).astimezone(PARIS_SUMMER),
        "state_message": 'it\'s "broken" – ünïcode\nsecond line',
    }


def test_move_flow_run_state_into_history(raw: Raw, batch_size: int) -> None:
    upgrade_to_revision_before(STATES)
    flow_id = seed_flow(raw)
    runs = [
        {
            "id": uuid.uuid4(),
            "flow_id": flow_id,
            "name": f"run-{i}",
            "expected_start_time": T0,
            "created": T0 + dt.timedelta(minutes=i),
            "updated": T0 + dt.timedelta(minutes=i, seconds=30),
            **flow_run_states(i),
        }
        for i in range(46)
    ]
    raw.insert("flow_run", *runs)
    state_columns = "id, state_type, state_name, state_timestamp"
    before = by_id(raw.rows(f"SELECT {state_columns}, state_message FROM flow_run"))
    stated = [run for run in runs if "state_type" in run]
    assert len(before) == 46 and 0 < len(stated) < 46

    upgrade_to(raw, STATES, rows=len(runs), batch_size=batch_size)

    assert "state_message" not in raw.columns("flow_run")
    flow_runs = by_id(raw.rows(f"SELECT {state_columns}, state_id FROM flow_run"))
    states = by_id(raw.rows("SELECT * FROM flow_run_state"))
    assert len(flow_runs) == 46
    assert len(states) == len(stated)
    for run in runs:
        row = flow_runs[run["id"]]
        assert {k: row[k] for k in before[run["id"]] if k != "state_message"} == {
            k: v for k, v in before[run["id"]].items() if k != "state_message"
        }  # the denormalised columns stay as they were
        if "state_type" not in run:
            assert row["state_id"] is None
            assert run["id"] not in states
            continue
        assert uid(row["state_id"]) == run["id"]
        state = states[run["id"]]
        assert uid(state["flow_run_id"]) == run["id"]
        assert state["type"] == run["state_type"]
        assert state["name"] == run.get("state_name", run["state_type"])
        assert utc(state["timestamp"]) == run.get("state_timestamp", run["updated"])
        assert state["message"] == run.get("state_message")
        assert (utc(state["created"]), utc(state["updated"])) == (run["created"], run["updated"])

    # A run's current state is the one state_id points at, not necessarily the first.
    moved_on = next(run for run in runs if run.get("state_type") == "RUNNING")
    newer_state = uuid.uuid4()
    raw.insert(
        "flow_run_state",
        {
            "id": newer_state,
            "flow_run_id": moved_on["id"],
            "type": "COMPLETED",
            "name": "Completed",
            "message": "all done",
        },
    )
    raw.execute(
        "UPDATE flow_run SET state_id = :state, state_type = 'COMPLETED' WHERE id = :run",
        state=newer_state,
        run=moved_on["id"],
    )

    downgrade_from(raw, STATES)

    assert "flow_run_state" not in raw.tables()
    after = by_id(raw.rows(f"SELECT {state_columns}, state_message FROM flow_run"))
    assert after[moved_on["id"]]["state_message"] == "all done"
    before[moved_on["id"]] |= {"state_type": "COMPLETED", "state_message": "all done"}
    assert after == before


# --- 7b5e9c2f4d3a: deployment.schedule into deployment_schedule ------------------------

SCHEDULE_CASES: list[tuple[str, Any]] = [
    ("hourly", {"interval": 3600, "anchor_date": "2026-01-01T00:00:00+00:00"}),
    ("cron", {"cron": "0 * * * *", "timezone": "Europe/Paris", "day_or": True}),
    ("rrule", {"rrule": "FREQ=DAILY;BYHOUR=9", "note": "l'été – ünïcode"}),
    ("empty-object", {}),  # a document, though an empty one: it moves
    ("sql-null", None),  # no schedule
    ("json-null", "null"),  # a JSON null is no schedule either
]


def test_move_deployment_schedules_into_table(raw: Raw, batch_size: int) -> None:
    upgrade_to_revision_before(SCHEDULES)
    flow_id = seed_flow(raw)
    deployments = [
        {
            "id": uuid.uuid4(),
            "flow_id": flow_id,
            "name": f"{case}-{i}",
            "created": T0 + dt.timedelta(minutes=i),
            "schedule": schedule,
        }
        for i in range(42)
        for case, schedule in [SCHEDULE_CASES[i % len(SCHEDULE_CASES)]]
    ]
    raw.insert("deployment", *deployments)
    scheduled = [d for d in deployments if d["schedule"] not in (None, "null")]
    assert raw.count("deployment") == 42

    upgrade_to(raw, SCHEDULES, rows=len(deployments), batch_size=batch_size)

    assert "schedule" not in raw.columns("deployment")
    assert raw.count("deployment") == 42
    schedules = by_id(raw.rows("SELECT * FROM deployment_schedule"))
    assert schedules.keys() == {d["id"] for d in scheduled}
    for deployment in scheduled:
        row = schedules[deployment["id"]]
        assert uid(row["deployment_id"]) == deployment["id"]
        assert document(row["schedule"]) == deployment["schedule"]
        assert bool(row["active"]) is True
        assert row["max_scheduled_runs"] is None
        assert utc(row["created"]) == deployment["created"]

    # At head a deployment may have several schedules; the downgrade keeps the oldest.
    hourly, cron = scheduled[0], scheduled[1]
    unscheduled = next(d for d in deployments if d["schedule"] is None)
    extra = {
        hourly["id"]: (hourly["created"] + dt.timedelta(days=1), {"interval": 60}),  # newer
        cron["id"]: (cron["created"] - dt.timedelta(days=1), {"cron": "0 0 * * *"}),  # older
        unscheduled["id"]: (T0, {"interval": 86400}),  # the only one
    }
    raw.insert(
        "deployment_schedule",
        *[
            {"id": uuid.uuid4(), "deployment_id": deployment_id, "created": created}
            | {"schedule": schedule}
            for deployment_id, (created, schedule) in extra.items()
        ],
    )

    downgrade_from(raw, SCHEDULES)

    assert "deployment_schedule" not in raw.tables()
    rows = by_id(raw.rows("SELECT id, schedule, schedule IS NULL AS is_null FROM deployment"))
    assert len(rows) == 42
    for deployment in deployments:
        row = rows[deployment["id"]]
        if deployment["id"] in (cron["id"], unscheduled["id"]):
            assert document(row["schedule"]) == extra[deployment["id"]][1]
        elif deployment in scheduled:
            assert document(row["schedule"]) == deployment["schedule"]
        else:  # SQL NULL and JSON null both come back as "no schedule"
            assert row["is_null"] in (True, 1)


def test_a_rerun_downgrade_joins_each_task_key_once(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB: dropping dynamic_key commits the join before it; if the drop then dies,
    the rerun of the downgrade must not join the keys a second time."""
    from tests.dbtools import in_progress

    monkeypatch.setenv("FLOWDB_DATABASE_URL", mariadb_url)
    raw = Raw(mariadb_url)
    alembic_upgrade(SPLIT)
    run_id = uuid.uuid4()
    raw.insert(
        "flow_run",
        {"id": run_id, "flow_id": seed_flow(raw), "name": "run", "expected_start_time": T0},
    )
    keys = {"t": ("t", "1"), "a": ("a", ""), "b": ("b", "x:y")}
    raw.insert(
        "task_run",
        *[
            {"id": uuid.uuid4(), "flow_run_id": run_id, "task_key": key, "dynamic_key": dynamic}
            | {"name": name}
            for name, (key, dynamic) in keys.items()
        ],
    )

    def die_in_the_drop(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "DROP COLUMN dynamic_key" in statement:
            cursor.execute("COMMIT")  # what the server does before any DDL
            raise RuntimeError("killed while dropping dynamic_key")

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", die_in_the_drop)
    try:
        with pytest.raises(Exception, match="dropping dynamic_key"):
            alembic_downgrade("-1")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", die_in_the_drop)
    assert in_progress(mariadb_url) == ((SPLIT, "downgrade", 0),)

    alembic_downgrade("-1")

    rows = {row["name"]: row["task_key"] for row in raw.rows("SELECT name, task_key FROM task_run")}
    assert rows == {"t": "t:1", "a": "a", "b": "b:x:y"}
    assert in_progress(mariadb_url) == ()
    raw.engine.dispose()


def test_mariadb_refuses_task_keys_its_unique_key_would_find_equal(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB compares the new unique key under utf8mb4_general_ci: ``K`` and ``k:`` (distinct
    before the split) would collide in it, so the check compares keys as that key will."""
    from flowdb.errors import UnconvertibleDataError

    monkeypatch.setenv("FLOWDB_DATABASE_URL", mariadb_url)
    raw = Raw(mariadb_url)
    try:
        upgrade_to_revision_before(SPLIT)
        run_id = uuid.uuid4()
        raw.insert(
            "flow_run",
            {"id": run_id, "flow_id": seed_flow(raw), "name": "r", "expected_start_time": T0},
        )
        raw.insert(
            "task_run",
            *[
                {"id": uuid.uuid4(), "flow_run_id": run_id, "task_key": key, "name": key}
                for key in ("K", "k:", "other")
            ],
        )
        with pytest.raises(UnconvertibleDataError, match=r"task_key 'K'\) and .*task_key 'k:'"):
            alembic_upgrade()
        assert revision_of(mariadb_url) == BACKFILL
    finally:
        raw.engine.dispose()


# --- a1f5c7e9b3d2 / b2a6d8f0c4e3: log.flow_run_id filled, then NOT NULL ----------------


def seed_runs_and_tasks(raw: Raw, runs: int, tasks_per_run: int) -> dict[uuid.UUID, uuid.UUID]:
    """Flow runs with task runs; returns each task run's flow run."""
    flow_id = seed_flow(raw)
    run_ids = [uuid.uuid4() for _ in range(runs)]
    raw.insert(
        "flow_run",
        *[
            {"id": run, "flow_id": flow_id, "name": f"run-{n}", "expected_start_time": T0}
            for n, run in enumerate(run_ids)
        ],
    )
    owners = {uuid.uuid4(): run for run in run_ids for _ in range(tasks_per_run)}
    raw.insert(
        "task_run",
        *[
            {"id": task, "flow_run_id": run, "task_key": f"t{n}", "dynamic_key": "0", "name": "t"}
            for n, (task, run) in enumerate(owners.items())
        ],
    )
    return owners


def log_line(
    flow_run_id: uuid.UUID | None, task_run_id: uuid.UUID | None, n: int
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "flow",
        "level": 20,
        "flow_run_id": flow_run_id,
        "task_run_id": task_run_id,
        "message": f"line {n}",
        "timestamp": T0 + dt.timedelta(seconds=n),
    }


def log_runs(raw: Raw) -> dict[uuid.UUID, uuid.UUID | None]:
    rows = raw.rows("SELECT id, flow_run_id FROM log")
    return {uid(r["id"]): None if r["flow_run_id"] is None else uid(r["flow_run_id"]) for r in rows}


def log_run_nullable(raw: Raw) -> bool:
    columns = sa.inspect(raw.engine).get_columns("log")
    return bool(next(c for c in columns if c["name"] == "flow_run_id")["nullable"])


def test_fill_log_flow_run_id_then_declare_it_not_null(raw: Raw, batch_size: int) -> None:
    """The expand fills every task-run-only line (and keeps the previous release's filled);
    the contract declares NOT NULL; each downgrade undoes its half, losing no line."""
    upgrade_to_revision_before(FILL_LOG_RUN)
    owners = seed_runs_and_tasks(raw, runs=4, tasks_per_run=5)
    tasks = list(owners)
    lines = [log_line(None, task, n) for n, task in enumerate(tasks)]  # 20 task-run-only
    lines += [log_line(owners[task], task, 20 + n) for n, task in enumerate(tasks[:5])]
    lines += [log_line(owners[tasks[0]], None, 30 + n) for n in range(5)]
    raw.insert("log", *lines)
    expected = {line["id"]: line["flow_run_id"] or owners[line["task_run_id"]] for line in lines}
    assert sum(run is None for run in log_runs(raw).values()) == 20

    upgrade_to(raw, FILL_LOG_RUN, rows=len(lines), batch_size=batch_size)

    assert log_runs(raw) == expected
    assert log_run_nullable(raw)  # the expand adds no constraint the previous code breaks
    old_release_line = log_line(None, tasks[7], 99)  # as the previous release stores it
    raw.insert("log", old_release_line)
    expected[old_release_line["id"]] = owners[tasks[7]]
    assert log_runs(raw) == expected

    alembic_upgrade(LOG_RUN_NOT_NULL)
    assert revision_of(str(raw.engine.url)) == LOG_RUN_NOT_NULL

    assert not log_run_nullable(raw)
    assert log_runs(raw) == expected
    with pytest.raises(sa.exc.IntegrityError):
        raw.insert("log", log_line(None, tasks[3], 100))  # nothing fills it any more
    assert log_runs(raw) == expected

    downgrade_from(raw, LOG_RUN_NOT_NULL)
    assert log_run_nullable(raw)
    again = log_line(None, tasks[9], 101)  # the trigger is back
    raw.insert("log", again)
    expected[again["id"]] = owners[tasks[9]]
    assert log_runs(raw) == expected

    downgrade_from(raw, FILL_LOG_RUN)
    stays_empty = log_line(None, tasks[11], 102)  # no trigger before the expand
    raw.insert("log", stays_empty)
    expected[stays_empty["id"]] = None
    assert log_runs(raw) == expected  # filled values stay: the older schema allows them


def test_log_lines_without_a_run_stop_the_contract_before_anything_changes(
    raw: Raw, configured: str
) -> None:
    """A line with neither run has no flow run to get: the upgrade refuses (exit 7) before
    it changes anything, naming the line and the SQL that finds such lines."""
    from flowdb.errors import ExitCode, UnconvertibleDataError

    upgrade_to_revision_before(FILL_LOG_RUN)
    owners = seed_runs_and_tasks(raw, runs=1, tasks_per_run=2)
    orphan = log_line(None, None, 1)
    raw.insert("log", orphan, log_line(None, next(iter(owners)), 2))
    before = revision_of(configured)

    with pytest.raises(UnconvertibleDataError) as refused:
        alembic_upgrade()
    assert refused.value.exit_code == ExitCode.REFUSED
    message = str(refused.value)
    assert LOG_RUN_NOT_NULL in message and "1 log line(s)" in message
    assert str(orphan["id"]) in message and "flow_run_id IS NULL AND task_run_id IS NULL" in message
    assert revision_of(configured) == before
    assert sum(run is None for run in log_runs(raw).values()) == 2  # nothing was filled

    raw.execute("DELETE FROM log WHERE flow_run_id IS NULL AND task_run_id IS NULL")
    alembic_upgrade()
    assert revision_of(configured) == load_history().head
    assert list(log_runs(raw).values()) == [owners[next(iter(owners))]]
