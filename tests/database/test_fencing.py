"""Fencing: the migration lock's server session ended in the middle of a replay.

A tester ending only the lock's session (``pg_terminate_backend`` of the backend that
holds flowdb's advisory lock; on MariaDB ``KILL`` of the connection ``IS_USED_LOCK``
names) must never let two commands apply migrations at once. Each trial upgrades a
database holding a few thousand runs from its third revision to head, ends the first
command's lock session at a random moment (after a random number of reported steps,
plus a few milliseconds) and starts a second upgrade at once. Then:

* the first command finished (exit 0) or stopped with exit 12 (``LOCK_LOST``) in one
  ``Error:`` line saying where the database stays; the second one finished;
* the run record holds each pending revision applied exactly once, in history order,
  with no failure, and the first command's rows all before the second's (one applier
  at a time);
* the database is at head with the schema of an uninterrupted upgrade, every seeded
  run still there, and a rerun has nothing to do.

Each trial's moment follows from its seed (dialect and number), so CI runs a
deterministic sample (``SAMPLE``): per dialect, the first trial whose kill point is each
of ``SAMPLED_POINTS``, one per kind of step the lock can be lost in: the first step (a
CREATE TABLE revision, before anything was recorded), renames of existing tables, an
online backfill in batches, an index built online, a contract that drops a column and
its triggers, and after the last step (before the lock is released); so on both dialects
the lock is lost before the replay, inside each kind of step and at its end, and every
sampled trial keeps every check. ``pytest -m exhaustive`` runs the other trials (every
other kill point, each at least once).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.commands import migrate
from flowdb.database.dialects.postgresql import ADVISORY_LOCK_KEY
from flowdb.database.history import load_history
from flowdb.database.journal import RUN_TABLE
from flowdb.database.target import Database
from flowdb.errors import ExitCode, MigrationLockLostError
from tests.dbtools import (
    create_mariadb_database,
    create_postgres_database,
    drop_mariadb_database,
    drop_postgres_database,
    in_progress,
    lock_connection,
    revision_of,
    scalar,
    schema_snapshot,
    seed_flow_runs,
    sync_engine,
    table_names,
    upgrade_forked,
)

TRIALS = 20
IDS = [revision.id for revision in load_history().revisions]
SEEDED_AT = IDS[2]
PENDING = IDS[3:]
RUNS = 3000

DATABASES: dict[str, tuple[Callable[[], str], Callable[[str], None]]] = {
    "postgresql": (create_postgres_database, drop_postgres_database),
    "mariadb": (create_mariadb_database, drop_mariadb_database),
}


def kill_point(dialect: str, trial: int) -> int:
    """After how many reported steps ``trial`` ends the lock session.

    The trials walk a shuffled order of every kill point (the dialect's seed), so the
    first ``len(PENDING) + 1`` of them meet each point once and the rest repeat some:
    a history that grows still has every stretch of its replay in the sample.
    """
    points = list(range(len(PENDING) + 1))
    random.Random(dialect).shuffle(points)
    return points[trial % len(points)]


#: The kill points CI's sample meets: each the step the lock is lost in, one per kind.
SAMPLED_POINTS = {
    0: "the first step: a CREATE TABLE revision, before anything was recorded",
    PENDING.index("1b5e8c2f7d43"): "renames of existing tables and columns",
    PENDING.index("3d1a5e7b9f86"): "an online backfill in batches",
    PENDING.index("8c6f0a3e5b41"): "an index built online",
    PENDING.index("9e3f5a7b2d46"): "a contract: a column and its triggers dropped",
    len(PENDING): "after the last step, before the lock is released",
}
#: Per dialect, the first trial whose kill point is each of ``SAMPLED_POINTS``; the rest
#: are ``exhaustive``.
SAMPLE = {
    dialect: {
        min(trial for trial in range(TRIALS) if kill_point(dialect, trial) == point)
        for point in SAMPLED_POINTS
    }
    for dialect in DATABASES
}


def test_the_sampled_trials_lose_the_lock_in_every_kind_of_step() -> None:
    for dialect, trials in SAMPLE.items():
        points = sorted(kill_point(dialect, trial) for trial in trials)
        assert points == sorted(SAMPLED_POINTS), (dialect, points)
    # Together with the exhaustive trials: every kill point, each at least once.
    for dialect in DATABASES:
        assert {kill_point(dialect, trial) for trial in range(TRIALS)} == set(
            range(len(PENDING) + 1)
        )


def lock_session(url: str) -> int | None:
    """The server's id of the session holding flowdb's migration lock, if anyone holds it."""
    if url.startswith("postgresql"):
        engine = sync_engine(url)
        try:
            with engine.connect() as connection:
                pid = connection.execute(
                    sa.text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid = 0 AND objid = :key AND objsubid = 1 AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"key": ADVISORY_LOCK_KEY},
                ).scalar()
        finally:
            engine.dispose()
        return None if pid is None else int(pid)
    try:
        return lock_connection(url)
    except AssertionError:  # nobody holds it (yet, or any more)
        return None


def end_session(url: str, session: int) -> None:
    """End server session ``session`` the way an operator would; gone already is fine."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            if url.startswith("postgresql"):
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": session})
            else:
                try:
                    connection.execute(sa.text(f"KILL {int(session)}"))
                except sa.exc.DBAPIError as exc:
                    assert "Unknown thread id" in str(exc), exc
    finally:
        engine.dispose()


def start_upgrade(url: str) -> subprocess.Popen[str]:
    """``flowdb database upgrade -y`` on ``url``, its stderr read line by line (forked:
    what is tried starts after the imports)."""
    return upgrade_forked({**os.environ, "FLOWDB_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"})


def end_lock_session_midway(
    url: str, process: subprocess.Popen[str], kill_after: int, rng: random.Random
) -> str:
    """Read ``process``'s steps, then end its lock session at the trial's moment.

    Returns the stderr read so far. The moment: after ``kill_after`` reported steps,
    plus up to 50 ms; a process that finished first is let be.
    """
    assert process.stderr is not None
    lines: list[str] = []
    while sum("↑" in line for line in lines) < kill_after:
        line = process.stderr.readline()
        if not line:
            return "".join(lines)
        lines.append(line)
    time.sleep(rng.uniform(0, 0.05))
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        session = lock_session(url)
        if session is not None:
            end_session(url, session)
            break
        time.sleep(0.02)
    return "".join(lines)


def applied_rows(url: str) -> list[tuple[str, int, bool]]:
    """The run record's upgrade rows in the order they were written: revision, pid, success."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    f"SELECT revision, pid, success FROM {RUN_TABLE} "
                    "WHERE direction = 'upgrade' ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(revision), int(pid), bool(success)) for revision, pid, success in rows]


def run_count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM flow_run") or 0)


@pytest.fixture(scope="session")
def clean_heads() -> Iterator[dict[str, dict[str, Any]]]:
    """Per dialect, made on first use: the schema of an uninterrupted upgrade from SEEDED_AT."""
    made: dict[str, dict[str, Any]] = {}
    yield made


def clean_head(dialect: str, made: dict[str, dict[str, Any]], monkeypatch: Any) -> dict[str, Any]:
    if dialect not in made:
        create, drop = DATABASES[dialect]
        url = create()
        try:
            monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
            alembic_upgrade(SEEDED_AT)
            alembic_upgrade("head")
            made[dialect] = schema_snapshot(url)
        finally:
            drop(url)
    return made[dialect]


@pytest.fixture
def seeded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database of the trial's dialect at SEEDED_AT holding RUNS flow runs.

    The worker's own database of that dialect (``postgres_url``/``mariadb_url``), emptied
    for the test in milliseconds instead of a database created and dropped per trial.
    """
    fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
    url = str(request.getfixturevalue(fixture))
    monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
    alembic_upgrade(SEEDED_AT)
    seed_flow_runs(url, RUNS)
    return url


def upgrade_here(url: str) -> subprocess.CompletedProcess[str]:
    """``flowdb database upgrade -y`` on ``url`` through ``main()`` in this process.

    The second command of a trial: what is tried is the first command's fencing, not
    the second's process; this one only has to be another applier (its record rows carry
    this process's id) that starts at once and finishes. No interpreter start.
    """
    from tests.cli.in_process import run_main

    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment["FLOWDB_DATABASE_URL"] = url
    environment["FLOWDB_HOME"] = os.environ["FLOWDB_HOME"]
    return run_main(environment, ["database", "upgrade", "-y"])


@pytest.mark.parametrize(
    ("seeded", "trial"),
    [
        pytest.param(
            dialect,
            trial,
            id=f"{dialect}-{trial}",
            marks=() if trial in SAMPLE[dialect] else pytest.mark.exhaustive,
        )
        for dialect in DATABASES
        for trial in range(TRIALS)
    ],
    indirect=["seeded"],
)
@pytest.mark.slow  # one trial takes 15-35 s on a loaded machine
def test_a_command_that_lost_its_lock_never_overlaps_the_next_holder(
    seeded: str,
    trial: int,
    clean_heads: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = seeded
    dialect = "postgresql" if url.startswith("postgresql") else "mariadb"
    rng = random.Random(f"{dialect}-{trial}")
    first = start_upgrade(url)
    try:
        early = end_lock_session_midway(url, first, kill_point(dialect, trial), rng)
        second = upgrade_here(url)
        err2 = second.stderr
        _, err1 = first.communicate(timeout=300)
    finally:
        first.kill()
    err1 = early + err1
    print(f"first command: exit {first.returncode}; {err1.strip().splitlines()[-1:]}")

    assert first.returncode in (ExitCode.OK, ExitCode.LOCK_LOST), err1
    assert "Traceback" not in err1 + err2
    if first.returncode == ExitCode.LOCK_LOST:
        errors = [line for line in err1.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, err1
        assert "migration lock" in errors[0] and "was lost" in errors[0], errors[0]
        assert "the database stays at " in errors[0], errors[0]
    assert second.returncode == ExitCode.OK, err2
    assert "Error:" not in err2

    rows = [row for row in applied_rows(url) if row[0] in PENDING]  # not the setup's
    assert all(success for _, _, success in rows), rows
    assert [revision for revision, _, _ in rows] == PENDING, rows
    pids = [pid for _, pid, _ in rows]
    # One applier at a time: the first command's steps, then the second's, never mixed.
    assert pids == sorted(pids, key=lambda pid: pid != first.pid), rows
    assert set(pids) <= {first.pid, os.getpid()}, rows

    assert revision_of(url) == IDS[-1]
    assert in_progress(url) == ()
    assert run_count(url) == RUNS
    assert schema_snapshot(url) == clean_head(dialect, clean_heads, monkeypatch)
    assert migrate(Database.from_url(url), "upgrade", "head").is_empty


def migration_session(url: str) -> int | None:
    """The server's id of the session running the migrations (not the lock's), if any."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            if url.startswith("postgresql"):
                found = connection.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = "
                        "'flowdb-migrate' AND datname = current_database()"
                    )
                ).scalar()
            else:
                fence = Database.from_url(url).dialect.fence_name  # type: ignore[attr-defined]
                found = connection.execute(
                    sa.text("SELECT IS_USED_LOCK(:name)"), {"name": fence}
                ).scalar()
    finally:
        engine.dispose()
    return None if found is None else int(found)


def end_after_first_step(url: str, session_of: Callable[[str], int | None]) -> tuple[int, str]:
    """Upgrade ``url``; end the session ``session_of`` finds once one step is reported.

    Returns the exit code and the Error line (the process must fail with one).
    """
    process = start_upgrade(url)
    assert process.stderr is not None
    try:
        lines = []
        while not any("↑" in line for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        deadline = time.monotonic() + 30
        while (session := session_of(url)) is None:
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            time.sleep(0.01)
        end_session(url, session)
        _, rest = process.communicate(timeout=300)
    finally:
        process.kill()
    output = "".join(lines) + rest
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return process.returncode, errors[0]


@pytest.mark.parametrize("seeded", list(DATABASES), indirect=True)
def test_a_lost_lock_stops_the_command_and_says_where_the_database_stays(seeded: str) -> None:
    """Exit 12 after the first step; the named revision is where the database is, untouched."""
    code, error = end_after_first_step(seeded, lock_session)
    assert code == ExitCode.LOCK_LOST, error
    assert "was lost" in error
    current = revision_of(seeded)
    assert current in PENDING[:-1]
    assert f"the database stays at {current}" in error
    for revision, phase, _ in in_progress(seeded):  # MariaDB: a migration part way
        assert f"with {revision} (phase {phase}) part way through" in error
    # Nobody else ran: the record holds only steps this command finished, and no failure.
    rows = [row for row in applied_rows(seeded) if row[0] in PENDING]
    assert [revision for revision, _, _ in rows] == PENDING[: PENDING.index(current) + 1]
    assert all(success for _, _, success in rows)


@pytest.mark.parametrize("seeded", list(DATABASES), indirect=True)
def test_a_lost_migration_connection_says_where_the_database_stays(seeded: str) -> None:
    """Not "cannot connect": the revision the database stays at, read again."""
    code, error = end_after_first_step(seeded, migration_session)
    assert code == ExitCode.UNREACHABLE, error
    assert "lost its connection" in error
    current = revision_of(seeded)
    assert current in PENDING[:-1]
    assert f"the database stays at {current}" in error


@pytest.mark.parametrize("seeded", list(DATABASES), indirect=True)
def test_a_finished_command_whose_lock_session_ended_still_succeeded(
    seeded: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock session ends after the last step: no error; the release is only logged."""
    database = Database.from_url(seeded)
    with database.lock("upgrade"):
        migrate(database, "upgrade", "head")
        session = lock_session(seeded)
        assert session is not None
        end_session(seeded, session)
        deadline = time.monotonic() + 30
        while lock_session(seeded) == session:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert revision_of(seeded) == IDS[-1]
    assert "had ended before the lock was released" in caplog.text
    assert Database.from_url(seeded).migration_running() is None


@pytest.mark.parametrize("fixture", ["postgres_url", "mariadb_url"])
def test_a_fresh_install_after_the_lock_was_lost_writes_nothing(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """The snapshot's script is fenced too: it stops before its first statement."""
    url = str(request.getfixturevalue(fixture))
    database = Database.from_url(url)
    with database.lock("upgrade"):
        session = lock_session(url)
        assert session is not None
        end_session(url, session)
        deadline = time.monotonic() + 30
        while lock_session(url) == session:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(MigrationLockLostError, match="the database stays at base"):
            migrate(database, "upgrade", "head")
    assert table_names(url) == set()
