"""Each data migration: seed rows in the old schema, upgrade, check; downgrade, check again.

Rows are counted before and after every step: a data migration must never lose rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.migrations import helpers
from tests.dbtools import sync_engine

BEFORE_DATA = "2c9f4d1a8e65"
BACKFILL = "3d1a5e7b9f86"
SPLIT = "4e2b6f8c1a97"
STATES = "5f3c7a9d2b18"
SCHEDULES = "7b5e9c2f4d3a"


class Db:
    """Raw SQL access for seeding and checking, with UUIDs in each dialect's storage form."""

    def __init__(self, url: str) -> None:
        self.engine = sync_engine(url)
        self.sqlite = url.startswith("sqlite")

    def key(self, value: uuid.UUID) -> Any:
        return value.hex if self.sqlite else value

    def run(self, sql: str, rows: list[dict[str, Any]] | dict[str, Any] | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(sql), rows or {})

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql))]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def db(configured: str) -> Any:
    database = Db(configured)
    yield database
    database.engine.dispose()


def seed_flow_runs(db: Db, count: int) -> list[uuid.UUID]:
    flow = uuid.uuid4()
    db.run("INSERT INTO flow (id, name) VALUES (:id, 'etl')", {"id": db.key(flow)})
    ids = [uuid.uuid4() for _ in range(count)]
    db.run(
        "INSERT INTO flow_run (id, flow_id, name, start_time, state_type, state_name, "
        "state_message) VALUES (:id, :flow, :name, :start, :type, :state_name, :message)",
        [
            {
                "id": db.key(run_id),
                "flow": db.key(flow),
                "name": f"run-{i}",
                "start": "2026-01-02 03:04:05" if i % 2 == 0 else None,
                "type": "COMPLETED" if i % 3 else None,
                "state_name": "Completed" if i % 3 == 1 else None,
                "message": f"message {i}" if i % 3 else None,
            }
            for i, run_id in enumerate(ids)
        ],
    )
    return ids


def test_backfill_expected_start_time(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "DATA_MIGRATION_BATCH_SIZE", 7)  # several batches
    alembic_upgrade(BEFORE_DATA)
    seed_flow_runs(db, 40)
    alembic_upgrade(BACKFILL)
    assert db.count("flow_run") == 40
    mismatched = db.rows(
        "SELECT count(*) FROM flow_run WHERE expected_start_time IS NULL "
        "OR expected_start_time <> COALESCE(start_time, created)"
    )
    assert mismatched == [(0,)]
    alembic_downgrade("-1")
    assert db.count("flow_run") == 40


@pytest.mark.parametrize(
    ("old_key", "task_key", "dynamic_key"),
    [("say_hello-3f2a:0", "say_hello-3f2a", "0"), ("plain", "plain", ""), ("a:b:c", "a", "b:c")],
)
def test_split_task_key_round_trips(
    db: Db, monkeypatch: pytest.MonkeyPatch, old_key: str, task_key: str, dynamic_key: str
) -> None:
    monkeypatch.setattr(helpers, "DATA_MIGRATION_BATCH_SIZE", 3)
    alembic_upgrade(BEFORE_DATA)
    runs = seed_flow_runs(db, 2)
    alembic_upgrade(BACKFILL)
    tasks = [(run, f"{old_key}" if n == 0 else f"{old_key}x{n}") for run in runs for n in range(4)]
    db.run(
        "INSERT INTO task_run (id, flow_run_id, task_key, name) VALUES (:id, :run, :key, 't')",
        [{"id": db.key(uuid.uuid4()), "run": db.key(run), "key": key} for run, key in tasks],
    )
    alembic_upgrade(SPLIT)
    assert db.count("task_run") == 8
    pairs = set(db.rows("SELECT task_key, dynamic_key FROM task_run"))
    assert (task_key, dynamic_key) in pairs
    alembic_downgrade("-1")
    assert sorted(key for (key,) in db.rows("SELECT task_key FROM task_run")) == sorted(
        key for _, key in tasks
    )


def test_split_allows_two_calls_of_one_task(db: Db) -> None:
    alembic_upgrade(BEFORE_DATA)
    (run,) = seed_flow_runs(db, 1)
    alembic_upgrade(BACKFILL)
    db.run(
        "INSERT INTO task_run (id, flow_run_id, task_key, name) VALUES (:id, :run, :key, 't')",
        [{"id": db.key(uuid.uuid4()), "run": db.key(run), "key": f"t:{n}"} for n in range(3)],
    )
    alembic_upgrade(SPLIT)
    assert sorted(db.rows("SELECT task_key, dynamic_key FROM task_run")) == [
        ("t", "0"),
        ("t", "1"),
        ("t", "2"),
    ]


def test_flow_run_states_move_into_history(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "DATA_MIGRATION_BATCH_SIZE", 5)
    alembic_upgrade(BEFORE_DATA)
    seed_flow_runs(db, 30)
    alembic_upgrade(SPLIT)
    before = db.rows("SELECT id, state_type, state_message FROM flow_run ORDER BY id")
    with_state = [row for row in before if row[1] is not None]
    alembic_upgrade(STATES)
    assert db.count("flow_run") == 30
    assert db.count("flow_run_state") == len(with_state)
    linked = db.rows(
        "SELECT f.id, s.message, s.name FROM flow_run f JOIN flow_run_state s ON s.id = f.state_id "
        "ORDER BY f.id"
    )
    assert [(row[0], row[1]) for row in linked] == [(row[0], row[2]) for row in with_state]
    assert {row[2] for row in linked} == {"Completed", "COMPLETED"}  # unnamed states take the type
    assert db.rows(
        "SELECT count(*) FROM flow_run WHERE state_type IS NULL AND state_id IS NOT NULL"
    ) == [(0,)]
    alembic_downgrade("-1")
    assert db.rows("SELECT id, state_type, state_message FROM flow_run ORDER BY id") == before


def test_deployment_schedules_move_into_their_table(db: Db) -> None:
    alembic_upgrade("6a4d8b1e3c29")
    flow = uuid.uuid4()
    db.run("INSERT INTO flow (id, name) VALUES (:id, 'etl')", {"id": db.key(flow)})
    schedules = {"hourly": '{"interval": 3600}', "none": None, "json-null": "null"}
    db.run(
        "INSERT INTO deployment (id, flow_id, name, schedule) "
        "VALUES (:id, :flow, :name, :schedule)",
        [
            {"id": db.key(uuid.uuid4()), "flow": db.key(flow), "name": name, "schedule": schedule}
            for name, schedule in schedules.items()
        ],
    )
    alembic_upgrade(SCHEDULES)
    assert db.count("deployment") == 3
    moved = db.rows(
        "SELECT d.name, s.active FROM deployment_schedule s JOIN deployment d "
        "ON d.id = s.deployment_id"
    )
    assert [(name, bool(active)) for name, active in moved] == [("hourly", True)]
    alembic_downgrade("-1")
    restored = dict(db.rows("SELECT name, CAST(schedule AS TEXT) FROM deployment"))
    assert restored["hourly"].replace(" ", "") == '{"interval":3600}'
    assert restored["none"] is None
    assert db.count("deployment") == 3
