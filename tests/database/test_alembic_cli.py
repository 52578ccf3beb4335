"""Alembic's own CLI on flowdb's history, with the ini from ``flowdb database alembic-ini``.

Every test runs Alembic's console-script function (``alembic.config:main``, what the
installed ``alembic`` script calls) against real databases (a SQLite file, PostgreSQL and
MariaDB): in the test's process (``tests.cli.in_process.run_alembic``) where only its
output, exit status and effect on the database are tried, and as the real ``alembic``
script in a subprocess, as an operator runs it, where the process is what is tried (the
first upgrade of every dialect, and each run that holds or waits for the migration lock
while the test looks at it from outside).
"""

from __future__ import annotations

import configparser
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from flowdb.database import bookkeeping
from flowdb.database.bookkeeping import DOWNGRADE_PHASE, PROGRESS_TABLE
from flowdb.database.history import load_history
from flowdb.database.migrations import restartable
from flowdb.database.runner import main_options
from flowdb.database.target import Database
from tests.cli.helpers import flowdb
from tests.cli.in_process import run_alembic
from tests.dbtools import (
    holder_description,
    in_progress,
    lock_holder,
    revision_of,
    schema_snapshot,
    sqlite_path,
    sync_engine,
    table_names,
)

#: The console script installed beside this interpreter, as operators run it.
ALEMBIC = str(Path(sys.executable).with_name("alembic"))

#: Bound on any one ``alembic`` run (a full replay on a loaded machine takes seconds).
RUN_TIMEOUT = 180


def alembic(
    ini: Path,
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``alembic -c INI ARGS``; ``url`` becomes ``FLOWDB_DATABASE_URL`` (flowdb's setting).

    In this process unless ``process`` asks for the real ``alembic`` script in a child.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment["FLOWDB_HOME"] = str(ini.parent / "flowdb-home")
    if url is not None:
        environment["FLOWDB_DATABASE_URL"] = url
    environment.update(env or {})
    if not process:
        return run_alembic(environment, ["-c", str(ini), *args], cwd=ini.parent)
    return subprocess.run(
        [ALEMBIC, "-c", str(ini), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ini.parent,
        timeout=RUN_TIMEOUT,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The run's stdout, after checking it succeeded."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stdout


def write_ini(folder: Path, url: str | None = None) -> Path:
    """Write the ini with ``flowdb database alembic-ini``; set ``sqlalchemy.url`` if given."""
    result = flowdb(None, "database", "alembic-ini", str(folder / "flowdb.ini"), home=folder)
    assert result.returncode == 0, result.stderr
    ini = Path(result.stdout.strip().removeprefix("Wrote "))
    assert ini == (folder / "flowdb.ini").resolve()
    if url is not None:
        text = ini.read_text(encoding="utf-8")
        ini.write_text(text.replace("[alembic]\n", f"[alembic]\nsqlalchemy.url = {url}\n", 1))
    return ini


def runs(url: str) -> list[tuple[str, str, bool]]:
    """flowdb's run record: ``(revision, direction, success)`` in the order written."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT revision, direction, success FROM flowdb_migration_run ORDER BY id")
            )
            return [(str(r[0]), str(r[1]), bool(r[2])) for r in rows]
    finally:
        engine.dispose()


# --- the ini ---------------------------------------------------------------------------


def test_alembic_ini_writes_the_runners_options_and_refuses_to_overwrite(tmp_path: Path) -> None:
    ini = write_ini(tmp_path)
    parser = configparser.ConfigParser()
    parser.read(ini)
    # Alembic reads the [alembic] section with interpolation, as the runner's Config does.
    assert {name: parser.get("alembic", name) for name in main_options()} == {
        name: value.replace("%%", "%") for name, value in main_options().items()
    }
    assert not parser.has_option("alembic", "sqlalchemy.url")
    written = ini.read_text(encoding="utf-8")

    ini.write_text("# someone's own configuration\n", encoding="utf-8")
    again = flowdb(None, "database", "alembic-ini", str(ini), home=tmp_path)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert ini.read_text(encoding="utf-8") == "# someone's own configuration\n"

    forced = flowdb(None, "database", "alembic-ini", str(ini), "--force", home=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert ini.read_text(encoding="utf-8") == written


def test_alembic_ini_into_a_missing_folder_fails_in_one_line(tmp_path: Path) -> None:
    result = flowdb(None, "database", "alembic-ini", str(tmp_path / "no" / "a.ini"), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


# --- the commands on each dialect --------------------------------------------------------


def test_alembic_cli_runs_flowdb_history(database_url: str, tmp_path: Path) -> None:
    history = load_history()
    head, previous = history.revisions[-1].id, history.revisions[-2].id
    ini = write_ini(tmp_path)

    assert ok(alembic(ini, "current", url=database_url)).strip() == ""

    ok(alembic(ini, "upgrade", "head", url=database_url, process=True))  # as operators do
    assert revision_of(database_url) == head
    # Recorded as flowdb records its own upgrades: one row per revision, in order.
    assert runs(database_url) == [(r.id, "upgrade", True) for r in history.revisions]

    assert f"{head} (head)" in ok(alembic(ini, "current", url=database_url))
    listed = ok(alembic(ini, "history", url=database_url))
    assert all(r.id in listed for r in history.revisions)
    assert ok(alembic(ini, "heads", url=database_url)).strip() == f"{head} (head)"
    assert "No new upgrade operations detected" in ok(alembic(ini, "check", url=database_url))

    ok(alembic(ini, "downgrade", "-1", url=database_url))
    assert revision_of(database_url) == previous
    assert runs(database_url)[-1] == (head, "downgrade", True)
    # Nothing left marked part way (MariaDB's restartable downgrade marks as it goes).
    assert in_progress(database_url) == ()

    tables = table_names(database_url)
    sql = ok(alembic(ini, "upgrade", "--sql", "base:head", url=database_url))
    assert "CREATE TABLE flow_run (" in sql
    assert f"-- Running upgrade {previous} -> {head}" in sql
    # A preview writes nothing.
    assert revision_of(database_url) == previous
    assert table_names(database_url) == tables

    ok(alembic(ini, "upgrade", "head", url=database_url))
    assert revision_of(database_url) == head
    assert in_progress(database_url) == ()


def test_alembic_check_on_a_database_behind_head_fails_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    ini = write_ini(tmp_path)
    ok(alembic(ini, "upgrade", load_history().revisions[1].id, url=database_url))

    result = alembic(ini, "check", url=database_url)

    assert result.returncode != 0
    assert "FAILED: Target database is not up to date." in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_alembic_stamp_is_recorded_and_an_unknown_revision_changes_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    history = load_history()
    ini = write_ini(tmp_path)

    ok(alembic(ini, "stamp", "head", url=sqlite_url))
    assert revision_of(sqlite_url) == history.head
    assert runs(sqlite_url) == [(r.id, "stamp", True) for r in history.revisions]

    for command in (["upgrade", "deadbeef0000"], ["stamp", "deadbeef0000"]):
        result = alembic(ini, *command, url=sqlite_url)
        assert result.returncode != 0
        assert "FAILED: Revision 'deadbeef0000' is not in flowdb's migration history" in (
            result.stdout + result.stderr
        )
        assert "Traceback" not in result.stderr
    assert revision_of(sqlite_url) == history.head
    assert len(runs(sqlite_url)) == len(history.revisions)


def test_a_failed_alembic_downgrade_is_one_line_recorded_and_rolled_back(
    sqlite_url: str, tmp_path: Path
) -> None:
    # 7b5e9c2f4d3a's downgrade is not rerunnable (the head's contract is: it adds its
    # column back only if missing), so the wrong stamp is made there.
    moved = "7b5e9c2f4d3a"
    ini = write_ini(tmp_path)
    ok(alembic(ini, "upgrade", moved, url=sqlite_url))
    ok(alembic(ini, "downgrade", "-1", url=sqlite_url))
    # A wrong stamp: the schema is one revision behind what the version row now says, so
    # reverting that revision meets a column that is already back.
    ok(alembic(ini, "stamp", moved, url=sqlite_url))
    before = table_names(sqlite_url)

    result = alembic(ini, "downgrade", "-1", url=sqlite_url)

    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "rolled back" in failed[0], result.stdout
    assert "Traceback" not in result.stderr
    assert revision_of(sqlite_url) == moved
    assert table_names(sqlite_url) == before
    assert runs(sqlite_url)[-1] == (moved, "downgrade", False)


def test_alembic_current_and_check_never_create_a_missing_sqlite_file(
    sqlite_url: str, tmp_path: Path
) -> None:
    ini = write_ini(tmp_path)
    path = sqlite_path(sqlite_url)
    assert path is not None

    assert ok(alembic(ini, "current", url=sqlite_url)).strip() == ""
    checked = alembic(ini, "check", url=sqlite_url)

    assert checked.returncode != 0
    assert "FAILED: " in checked.stdout and "does not exist yet" in checked.stdout
    assert "Traceback" not in checked.stderr
    assert not path.exists()


def test_alembic_refuses_to_move_a_database_left_part_way(sqlite_url: str, tmp_path: Path) -> None:
    """A killed run's mark (as MariaDB's restartable DDL and online migrations leave it)."""
    history = load_history()
    at, next_one = history.revisions[3].id, history.revisions[4].id
    ini = write_ini(tmp_path)
    ok(alembic(ini, "upgrade", at, url=sqlite_url))

    def mark(revision: str, phase: str) -> None:
        engine = sync_engine(sqlite_url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text(bookkeeping.CREATE_PROGRESS))
                connection.execute(sa.text(f"DELETE FROM {PROGRESS_TABLE}"))
                restartable.mark(connection, revision, phase)
        finally:
            engine.dispose()

    for revision, phase, command in (
        (at, DOWNGRADE_PHASE, ["upgrade", "head"]),
        (next_one, "backfill", ["downgrade", "-1"]),
    ):
        mark(revision, phase)
        before = schema_snapshot(sqlite_url)
        result = alembic(ini, *command, url=sqlite_url)
        assert result.returncode != 0
        assert "part way through" in result.stdout and "nothing was changed" in result.stdout
        assert "Traceback" not in result.stderr
        assert revision_of(sqlite_url) == at
        assert schema_snapshot(sqlite_url) == before


def test_the_ini_sqlalchemy_url_wins_over_flowdb_settings(sqlite_url: str, tmp_path: Path) -> None:
    ini = write_ini(tmp_path, url=sqlite_url)
    other = f"sqlite:///{tmp_path / 'settings.db'}"

    ok(alembic(ini, "upgrade", "head", url=other))

    assert revision_of(sqlite_url) == load_history().head
    other_path = sqlite_path(other)
    assert other_path is not None and not other_path.exists()


# --- the migration lock ------------------------------------------------------------------


def test_alembic_upgrade_refuses_while_flowdb_holds_the_migration_lock(
    database_url: str, tmp_path: Path
) -> None:
    ini = write_ini(tmp_path)
    with lock_holder(database_url) as holder:
        expected = holder_description(database_url, holder)
        result = alembic(
            ini, "upgrade", "head", url=database_url, env={"FLOWDB_MIGRATION_LOCK_TIMEOUT": "1"}
        )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "FAILED: Timed out after 1 s waiting for the migration lock" in output
    assert expected in output
    assert "Traceback" not in result.stderr
    assert revision_of(database_url) is None
    assert not {"flow", "flow_run"} & table_names(database_url)


def test_alembic_upgrade_waits_for_the_lock_then_runs(sqlite_url: str, tmp_path: Path) -> None:
    ini = write_ini(tmp_path)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment.update(
        FLOWDB_HOME=str(tmp_path / "flowdb-home"),
        FLOWDB_DATABASE_URL=sqlite_url,
        FLOWDB_MIGRATION_LOCK_TIMEOUT="120",
    )
    with lock_holder(sqlite_url) as holder:
        running = subprocess.Popen(
            [ALEMBIC, "-c", str(ini), "upgrade", "head"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        assert running.stderr is not None
        seen: list[str] = []
        for line in running.stderr:  # ends at the latest when the run gives up (120 s)
            seen.append(line)
            if "Waiting for the migration lock" in line:
                break
        # Still waiting, with nothing applied, while the holder holds the lock.
        assert running.poll() is None, "".join(seen)
        assert f"held by flowdb upgrade (pid {holder.pid} " in seen[-1]
        assert revision_of(sqlite_url) is None
    # The holder is gone (killed): the waiting run takes the lock and finishes.
    _out, err = running.communicate(timeout=RUN_TIMEOUT)
    assert running.returncode == 0, err[-3000:]
    assert revision_of(sqlite_url) == load_history().head


def test_flowdb_upgrade_refuses_while_an_alembic_upgrade_holds_the_lock(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The other way round: a plain ``alembic upgrade`` holds the lock, flowdb names it.

    The test keeps a write transaction open on the SQLite file, so the alembic run waits
    for the database while it holds the migration lock; releasing it lets the run finish.
    """
    history = load_history()
    ini = write_ini(tmp_path)
    ok(alembic(ini, "upgrade", history.revisions[0].id, url=sqlite_url))
    path = sqlite_path(sqlite_url)
    assert path is not None
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment.update(
        FLOWDB_HOME=str(tmp_path / "flowdb-home"),
        FLOWDB_DATABASE_URL=sqlite_url,
        FLOWDB_MIGRATION_LOCK_TIMEOUT="120",
    )
    running = subprocess.Popen(
        [ALEMBIC, "-c", str(ini), "upgrade", "head"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        database = Database.from_url(sqlite_url)
        deadline = time.monotonic() + RUN_TIMEOUT
        holder = database.migration_running()
        while holder is None and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            holder = database.migration_running()
        assert holder is not None and holder.pid == running.pid
        assert holder.command == "alembic-upgrade"

        refused = flowdb(
            sqlite_url,
            "database",
            "upgrade",
            "-y",
            home=tmp_path,
            env={"FLOWDB_MIGRATION_LOCK_TIMEOUT": "1"},
        )
        assert refused.returncode == 6, refused.stderr
        assert f"held by flowdb alembic-upgrade (pid {running.pid} " in refused.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        _out, err = running.communicate(timeout=RUN_TIMEOUT)
    assert running.returncode == 0, err[-3000:]
    assert revision_of(sqlite_url) == history.head
