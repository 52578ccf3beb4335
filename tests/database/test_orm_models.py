"""The ORM models agree with the head of the migration history, and behave on both dialects."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.bookkeeping import TABLES as BOOKKEEPING_TABLES
from flowdb.database.column_types import StateType
from flowdb.database.orm_models import (
    Artifact,
    Base,
    Deployment,
    DeploymentSchedule,
    Flow,
    FlowRun,
    FlowRunState,
    Log,
    TaskRun,
)
from flowdb.database.schema_check import schema_differences
from flowdb.database.target import Database
from tests.dbtools import sync_engine

PACIFIC_SUMMER = dt.timezone(dt.timedelta(hours=-7))


# --- head matches the models -----------------------------------------------------------


def test_head_matches_the_models_and_the_comparison_can_fail(configured: str) -> None:
    database = Database.from_url(configured)
    alembic_upgrade()
    assert schema_differences(database) == []

    # 7b5e9c2f4d3a drops deployment_schedule and brings back deployment.schedule.
    alembic_downgrade("6a4d8b1e3c29")

    differences = schema_differences(database)
    assert any("add table: deployment_schedule" in d for d in differences), differences
    assert any("deployment.schedule" in d for d in differences), differences


#: MySQL and MariaDB call every primary key PRIMARY, whatever the DDL names it (SQLAlchemy
#: reflects the name as None).
UNNAMED_PRIMARY_KEYS = {"mysql", "mariadb"}


def plain_indexes(inspector: Any, table: str) -> list[dict[str, Any]]:
    """The indexes of ``table`` that are not the index of a unique constraint.

    PostgreSQL's reflection marks such an index ``duplicates_constraint``; MySQL's and
    MariaDB's mark the constraint ``duplicates_index`` (a unique constraint is an index there).
    """
    of_constraints = {
        uq.get("duplicates_index") for uq in inspector.get_unique_constraints(table)
    } - {None}
    return [
        i
        for i in inspector.get_indexes(table)
        if not i.get("duplicates_constraint") and i["name"] not in of_constraints
    ]


def convention_names(inspector: Any, table: str) -> dict[str, set[str]]:
    """The live names of ``table``'s constraints and indexes, by kind."""
    return {
        "pk": {inspector.get_pk_constraint(table)["name"]},
        "fk": {fk["name"] for fk in inspector.get_foreign_keys(table)},
        "uq": {uq["name"] for uq in inspector.get_unique_constraints(table)},
        "ix": {ix["name"] for ix in plain_indexes(inspector, table)},
    }


def expected_names(inspector: Any, table: str) -> dict[str, set[str]]:
    """What ``NAMING_CONVENTION`` calls the live constraints and indexes of ``table``.

    Where the server names every primary key itself, its reflected name is None.
    """
    unnamed = inspector.dialect.name in UNNAMED_PRIMARY_KEYS
    return {
        "pk": {None} if unnamed else {f"pk_{table}"},
        "fk": {
            f"fk_{table}__{fk['constrained_columns'][0]}__{fk['referred_table']}"
            for fk in inspector.get_foreign_keys(table)
        },
        "uq": {
            f"uq_{table}__{'_'.join(uq['column_names'])}"
            for uq in inspector.get_unique_constraints(table)
        },
        "ix": {
            f"ix_{table}__{'_'.join(ix['column_names'])}" for ix in plain_indexes(inspector, table)
        },
    }


def model_names(table: sa.Table) -> dict[str, set[str]]:
    """The names the models give the constraints and indexes of ``table``."""
    kinds = {
        sa.PrimaryKeyConstraint: "pk",
        sa.ForeignKeyConstraint: "fk",
        sa.UniqueConstraint: "uq",
    }
    names: dict[str, set[str]] = {"pk": set(), "fk": set(), "uq": set(), "ix": set()}
    for constraint in table.constraints:
        kind = kinds.get(type(constraint))
        if kind is not None:
            names[kind].add(str(constraint.name))
    names["ix"] = {str(index.name) for index in table.indexes}
    return names


def test_live_names_follow_the_naming_convention(configured: str) -> None:
    alembic_upgrade()
    engine = sync_engine(configured)
    try:
        inspector = sa.inspect(engine)
        # Alembic's version table and flowdb's own tables are bookkeeping, not models.
        live_tables = set(inspector.get_table_names()) - {"alembic_version", *BOOKKEEPING_TABLES}
        assert live_tables == set(Base.metadata.tables)
        for table in sorted(live_tables):
            live = convention_names(inspector, table)
            assert live == expected_names(inspector, table), table
            model = model_names(Base.metadata.tables[table])
            assert model["pk"] == {f"pk_{table}"}, table
            if inspector.dialect.name in UNNAMED_PRIMARY_KEYS:
                model["pk"] = {None}  # the server's PRIMARY, whatever the models say
            assert live == model, table
            model_key = [c.name for c in Base.metadata.tables[table].primary_key.columns]
            assert inspector.get_pk_constraint(table)["constrained_columns"] == model_key, table
            model_ondelete = {
                fk.name: fk.ondelete for fk in Base.metadata.tables[table].foreign_key_constraints
            }
            live_ondelete = {
                fk["name"]: fk["options"].get("ondelete")
                for fk in inspector.get_foreign_keys(table)
            }
            assert live_ondelete == model_ondelete, table
    finally:
        engine.dispose()


# --- ORM round trip at head ------------------------------------------------------------


@pytest.fixture
def engine(configured: str) -> Iterator[sa.Engine]:
    """A plain engine on a database at head; SQLite enforces foreign keys like PostgreSQL."""
    alembic_upgrade()
    engine = sync_engine(configured)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _enforce_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    yield engine
    engine.dispose()


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def assert_utc(value: dt.datetime | None) -> dt.datetime:
    assert value is not None
    assert value.tzinfo is dt.UTC
    return value


def seed_flow_with_a_run(engine: sa.Engine) -> dict[str, uuid.UUID]:
    """A flow with a deployment and schedule, a run with a state, a task run, logs, an artifact."""
    ids = {
        name: uuid.uuid4()
        for name in ("flow", "deployment", "schedule", "run", "state", "task", "log", "artifact")
    }
    expected_start = dt.datetime(2026, 5, 1, 7, 30, 15, 250000, tzinfo=PACIFIC_SUMMER)
    with Session(engine) as session, session.begin():
        # The models declare no relationships, so the ORM does not order inserts of
        # different classes by their foreign keys: flush parents before children.
        session.add(Flow(id=ids["flow"], name="etl", tags=["nightly"]))
        session.flush()
        session.add(Deployment(id=ids["deployment"], flow_id=ids["flow"], name="prod"))
        session.flush()
        session.add(
            DeploymentSchedule(
                id=ids["schedule"], deployment_id=ids["deployment"], schedule={"interval": 60}
            )
        )
        session.add(
            FlowRun(
                id=ids["run"],
                flow_id=ids["flow"],
                deployment_id=ids["deployment"],
                name="run-1",
                expected_start_time=expected_start,
                parameters={"date": "2026-05-01", "retries": 3},
            )
        )
        session.flush()
        session.add(
            FlowRunState(
                id=ids["state"],
                flow_run_id=ids["run"],
                type=StateType.RUNNING,
                name="Running",
                message="started",
                data={"attempt": [1, 2]},
            )
        )
        session.add(
            TaskRun(
                id=ids["task"],
                flow_run_id=ids["run"],
                task_key="extract",
                dynamic_key="0",
                name="extract-0",
                state_type=StateType.PENDING,
            )
        )
        session.flush()
        run = session.get(FlowRun, ids["run"])
        assert run is not None
        run.state_id = ids["state"]
        run.state_type = StateType.RUNNING
        run.state_name = "Running"
        run.state_timestamp = expected_start + dt.timedelta(minutes=1)
        session.add(
            Log(
                id=ids["log"],
                name="flowdb.test",
                level=20,
                flow_run_id=ids["run"],
                task_run_id=ids["task"],
                message="extracted 12 rows",
                timestamp=expected_start + dt.timedelta(minutes=2),
            )
        )
        session.add(
            Artifact(
                id=ids["artifact"], key="report", flow_run_id=ids["run"], task_run_id=ids["task"]
            )
        )
    return ids


def test_orm_round_trip_with_timezone_aware_timestamps(engine: sa.Engine) -> None:
    started = dt.datetime.now(dt.UTC)
    ids = seed_flow_with_a_run(engine)
    expected_start = dt.datetime(2026, 5, 1, 14, 30, 15, 250000, tzinfo=dt.UTC)

    with Session(engine) as session:
        flow = session.get(Flow, ids["flow"])
        run = session.get(FlowRun, ids["run"])
        state = session.get(FlowRunState, ids["state"])
        task = session.get(TaskRun, ids["task"])
        log = session.get(Log, ids["log"])
        assert flow is not None and run is not None and state is not None
        assert task is not None and log is not None

        assert (flow.name, flow.tags) == ("etl", ["nightly"])
        assert assert_utc(run.expected_start_time) == expected_start
        assert assert_utc(run.state_timestamp) == expected_start + dt.timedelta(minutes=1)
        assert (
            started - dt.timedelta(seconds=5) <= assert_utc(run.created) <= dt.datetime.now(dt.UTC)
        )
        assert_utc(run.updated)
        assert run.parameters == {"date": "2026-05-01", "retries": 3}
        assert (run.state_id, run.state_type, run.state_name) == (
            ids["state"],
            StateType.RUNNING,
            "Running",
        )
        assert run.deployment_id == ids["deployment"]
        assert (run.run_count, run.tags, run.start_time) == (0, [], None)

        assert (state.flow_run_id, state.type, state.name) == (
            ids["run"],
            StateType.RUNNING,
            "Running",
        )
        assert (state.message, state.data) == ("started", {"attempt": [1, 2]})
        assert_utc(state.timestamp)

        assert (task.flow_run_id, task.task_key, task.dynamic_key) == (ids["run"], "extract", "0")
        assert task.state_type is StateType.PENDING

        assert (log.flow_run_id, log.task_run_id, log.level) == (ids["run"], ids["task"], 20)
        assert assert_utc(log.timestamp) == expected_start + dt.timedelta(minutes=2)


def test_naive_datetimes_are_refused(engine: sa.Engine) -> None:
    with Session(engine) as session:
        flow = Flow(name="etl")
        session.add(flow)
        session.flush()
        session.add(
            FlowRun(flow_id=flow.id, name="naive", expected_start_time=dt.datetime(2026, 5, 1))
        )
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.flush()


def test_deleting_a_flow_cascades_to_its_runs_and_keeps_artifacts(engine: sa.Engine) -> None:
    ids = seed_flow_with_a_run(engine)
    children = ("deployment", "deployment_schedule", "flow_run", "flow_run_state", "task_run")
    assert {table: count(engine, table) for table in (*children, "log")} == dict.fromkeys(
        (*children, "log"), 1
    )

    with Session(engine) as session, session.begin():
        flow = session.get(Flow, ids["flow"])
        assert flow is not None
        session.delete(flow)

    assert {table: count(engine, table) for table in ("flow", *children, "log")} == dict.fromkeys(
        ("flow", *children, "log"), 0
    )
    with Session(engine) as session:
        artifact = session.get(Artifact, ids["artifact"])
        assert artifact is not None  # an artifact outlives its run (SET NULL)
        assert (artifact.key, artifact.flow_run_id, artifact.task_run_id) == ("report", None, None)
