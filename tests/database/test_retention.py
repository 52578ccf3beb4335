"""``flowdb database clean``: what it deletes, what it keeps, and how it behaves beside others.

Every test runs the real command on a real database (SQLite, PostgreSQL, MariaDB),
seeded by ``retention_data.seed`` with runs the clean must tell apart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.cli.helpers import assert_one_line_error, flowdb, ok
from tests.database.retention_data import counts, remaining, seed
from tests.dbtools import DIALECTS, data_checksums, sync_engine

KEPT = ("recent", "active", "rescheduled")


def _state(url: str) -> object:
    """What must not change: every row (row counts only on MariaDB, whose quoting differs)."""
    if sa.make_url(url).get_backend_name() == "mariadb":
        return counts(url)
    return data_checksums(url)


def _upgraded(url: str) -> str:
    ok(flowdb(url, "database", "upgrade", "-y"))
    return url


def test_clean_deletes_expired_runs_with_their_children_and_nothing_else(
    database_url: str,
) -> None:
    url = _upgraded(database_url)
    ids = seed(url, expired=25)
    before = counts(url)
    result = ok(
        flowdb(
            url,
            "database",
            "clean",
            "--older-than",
            "7d",
            "-y",
            env={"FLOWDB_RETENTION_BATCH_SIZE": "10"},
        )
    )
    after = counts(url)
    assert remaining(url, ids["expired"]) == 0
    for kind in KEPT:
        assert remaining(url, ids[kind]) == len(ids[kind]), kind
    kept_runs = sum(len(ids[kind]) for kind in KEPT)
    # Per run: 2 flow run states, 2 task runs with 2 states each, 6 log lines.
    assert after["flow_run"] == kept_runs == before["flow_run"] - 25
    assert after["flow_run_state"] == 2 * kept_runs
    assert after["task_run"] == 2 * kept_runs
    assert after["task_run_state"] == 4 * kept_runs
    assert after["log"] == 6 * kept_runs
    assert after["flow"] == before["flow"] == 1
    assert after["artifact"] == before["artifact"]  # artifacts are kept...
    assert after["linked artifact"] == kept_runs  # ...unlinked from the deleted runs
    assert all(after[name] == 0 for name in after if name.startswith("orphan"))
    assert "flow_run 25" in result.stdout and "log 150" in result.stdout
    assert "Cleaning: 25/25 flow runs" in result.stderr


def test_clean_json_gives_what_was_deleted_per_table_with_times(database_url: str) -> None:
    import json

    url = _upgraded(database_url)
    seed(url, expired=12)
    env = {"FLOWDB_RETENTION_BATCH_SIZE": "5"}
    result = ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y", "--json", env=env))

    document = json.loads(result.stdout)  # stdout is the document and nothing else
    assert document["command"] == "clean" and document["exit_code"] == 0
    assert document["dry_run"] is False
    expected = {
        "log": 72,
        "task_run_state": 48,
        "task_run": 24,
        "flow_run_state": 24,
        "flow_run": 12,
    }
    assert document["to_delete"] == expected
    assert {table: item["rows"] for table, item in document["deleted"].items()} == expected
    assert document["rows"] == sum(expected.values())
    assert document["batches"] == 3
    # An artifact may point at a run and at one of its task runs: two links to clear.
    links, artifacts = document["artifact_links_cleared"]["rows"], document["artifacts_to_unlink"]
    assert 0 < artifacts <= links <= 2 * artifacts
    times = [item["seconds"] for item in document["deleted"].values()]
    assert all(isinstance(t, int | float) and t >= 0 for t in times)
    assert sum(times) <= document["seconds"] + 0.01  # parts of the whole
    # Progress on stderr: runs of the total, rows per table, time left once known.
    progress = [line for line in result.stderr.splitlines() if line.startswith("Cleaning:")]
    assert progress and progress[-1].startswith("Cleaning: 12/12 flow runs, 180 rows deleted")
    assert (
        "(flow_run 12, flow_run_state 24, task_run 24, task_run_state 48, log 72)" in progress[-1]
    )
    assert "s left" in progress[-1]
    assert "flow_run" in result.stderr  # the plan went to stderr, beside the progress


def test_clean_dry_run_json_changes_nothing(sqlite_url: str) -> None:
    import json

    url = _upgraded(sqlite_url)
    seed(url, expired=4)
    before = _state(url)
    result = ok(flowdb(url, "database", "clean", "--older-than", "7d", "--dry-run", "--json"))
    assert _state(url) == before
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and document["deleted"] is None
    assert document["to_delete"]["flow_run"] == 4 and document["exit_code"] == 0
    assert "nothing was changed" in result.stderr


def test_dry_run_prints_the_counts_and_changes_nothing(database_url: str) -> None:
    url = _upgraded(database_url)
    seed(url, expired=6)
    before = _state(url)
    result = ok(flowdb(url, "database", "clean", "--older-than", "7d", "--dry-run"))
    assert _state(url) == before
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert lines["flow_run"].split()[1] == "6"
    assert lines["log"].split()[1] == "36"
    assert lines["task_run_state"].split()[1] == "24"
    assert "nothing was changed" in result.stdout


def test_without_a_terminal_and_without_yes_it_refuses_and_changes_nothing(
    sqlite_url: str,
) -> None:
    url = _upgraded(sqlite_url)
    seed(url, expired=3)
    before = _state(url)
    result = flowdb(url, "database", "clean", "--older-than", "7d")
    assert result.returncode == 2
    assert_one_line_error(result, "--yes")
    assert _state(url) == before


#: Durations that are not one, and ones reaching back past the oldest cutoff (999999d put
#: it before the year 1: a traceback), with the words of their one-line errors.
BAD_DURATIONS = [
    *[(text, ("30d",)) for text in ["30", "abc", "0d", "-1d", "5w", "1.5d", ""]],
    *[
        (text, ("more than 36500 days", "at most 36500d"))
        for text in ["999999d", "36501d", "876001h", "52560001m", "9" * 30 + "d"]
    ],
]


@pytest.mark.parametrize(("duration", "words"), BAD_DURATIONS)
def test_a_bad_duration_is_one_line_and_exit_2(
    sqlite_url: str, duration: str, words: tuple[str, ...]
) -> None:
    url = _upgraded(sqlite_url)
    seed(url, expired=2)
    before = _state(url)
    result = flowdb(url, "database", "clean", "--older-than", duration, "-y")
    assert result.returncode == 2
    assert_one_line_error(result, *words)
    assert _state(url) == before


@pytest.mark.parametrize("duration", ["36500d", "876000h", "52560000m"])
def test_the_oldest_cutoff_is_taken_and_deletes_nothing_newer(
    sqlite_url: str, duration: str
) -> None:
    url = _upgraded(sqlite_url)
    seed(url, expired=2)
    before = _state(url)
    ok(flowdb(url, "database", "clean", "--older-than", duration, "-y"))
    assert _state(url) == before


def test_a_database_not_at_head_is_refused(sqlite_url: str) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", "6a4d8b1e3c29"))
    result = flowdb(sqlite_url, "database", "clean", "--older-than", "7d", "-y")
    assert result.returncode == 7
    assert_one_line_error(result, "not at head", "flowdb database upgrade")


def test_an_empty_database_is_refused_and_not_created(sqlite_url: str) -> None:
    from tests.cli.helpers import sqlite_file

    result = flowdb(sqlite_url, "database", "clean", "--older-than", "7d", "-y")
    assert result.returncode == 7
    assert_one_line_error(result, "not at head")
    assert not sqlite_file(sqlite_url).exists()


def test_a_second_cleaner_is_refused_while_one_holds_the_cleaner_lock(database_url: str) -> None:
    from flowdb.database.target import Database

    url = _upgraded(database_url)
    ids = seed(url, expired=3)
    with Database.from_url(url).dialect.cleaner_lock() as held:
        assert held
        result = flowdb(url, "database", "clean", "--older-than", "7d", "-y")
    assert result.returncode == 6
    assert_one_line_error(result, "Another clean")
    assert remaining(url, ids["expired"]) == 3
    ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y"))
    assert remaining(url, ids["expired"]) == 0


@pytest.mark.parametrize("dialect", ["postgres", "mariadb"])
@pytest.mark.parametrize("held", ["flow_run", "task_run"])
def test_a_run_another_transaction_is_changing_is_skipped(
    dialect: str, held: str, request: pytest.FixtureRequest
) -> None:
    """The API locks a run's row (or a task run's) to change its state: the clean skips it."""
    url = _upgraded(str(request.getfixturevalue(f"{dialect}_url")))
    ids = seed(url, expired=8)
    busy = ids["expired"][3]
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            table = sa.table(held, sa.column("id", sa.Uuid), sa.column("flow_run_id", sa.Uuid))
            row_id = busy
            if held == "task_run":
                row_id = connection.execute(
                    sa.select(table.c.id).where(table.c.flow_run_id == busy).limit(1)
                ).scalar_one()
            # The API's own lock (server/states.enter_state), by primary key:
            # FOR NO KEY UPDATE on PostgreSQL, FOR UPDATE on MariaDB.
            connection.execute(
                sa.select(table.c.id).where(table.c.id == row_id).with_for_update(key_share=True)
            ).all()
            started = time.monotonic()
            ok(
                flowdb(
                    url,
                    "database",
                    "clean",
                    "--older-than",
                    "7d",
                    "-y",
                    env={"FLOWDB_RETENTION_BATCH_SIZE": "3"},
                )
            )
            assert time.monotonic() - started < 30  # skipped, never waited for
            connection.rollback()
        assert remaining(url, ids["expired"]) == 1
        assert remaining(url, [busy]) == 1
        assert all(v == 0 for k, v in counts(url).items() if k.startswith("orphan"))
        ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y"))
        assert remaining(url, ids["expired"]) == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_clean_killed_part_way_is_continued_by_running_it_again(
    dialect: str, request: pytest.FixtureRequest
) -> None:
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}
    url = _upgraded(str(request.getfixturevalue(fixture[dialect])))
    ids = seed(url, expired=1_200)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment |= {"FLOWDB_DATABASE_URL": url, "FLOWDB_RETENTION_BATCH_SIZE": "20"}
    child = subprocess.Popen(
        [sys.executable, "-m", "flowdb", "database", "clean", "--older-than", "7d", "-y"],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while remaining(url, ids["expired"]) > 1_200 - 100:  # a few batches have committed
            assert child.poll() is None, "the clean ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    left = remaining(url, ids["expired"])
    assert 0 < left < 1_200 - 100 + 1
    middle = counts(url)
    assert all(v == 0 for k, v in middle.items() if k.startswith("orphan")), middle
    # Whole runs only: each surviving expired run still has all its children.
    assert middle["task_run"] == 2 * middle["flow_run"]
    assert middle["log"] == 6 * middle["flow_run"]
    result = ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y"))
    assert f"flow_run {left:,}" in result.stdout
    assert remaining(url, ids["expired"]) == 0
    for kind in KEPT:
        assert remaining(url, ids[kind]) == len(ids[kind])


def test_a_new_sqlite_file_gives_the_freed_pages_back_after_a_clean(sqlite_url: str) -> None:
    import sqlite3

    from tests.cli.helpers import sqlite_file

    url = _upgraded(sqlite_url)
    seed(url, expired=300)
    path = sqlite_file(url)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
        pages_before = connection.execute("PRAGMA page_count").fetchone()[0]
    result = ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y"))
    assert "free pages given back" in result.stdout
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA freelist_count").fetchone() == (0,)
        assert connection.execute("PRAGMA page_count").fetchone()[0] < pages_before * 0.5


def test_through_a_transaction_pooler_the_cleaner_lock_holds_and_is_released(
    pgbouncer_url: str,
) -> None:
    from flowdb.database.target import Database

    url = _upgraded(pgbouncer_url)
    ids = seed(url, expired=4)
    environment = {"FLOWDB_DATABASE_POOL_MODE": "transaction"}
    with Database.from_url(url).dialect.cleaner_lock() as held:
        assert held
        busy = flowdb(url, "database", "clean", "--older-than", "7d", "-y", env=environment)
    assert busy.returncode == 6
    ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y", env=environment))
    ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y", env=environment))
    assert remaining(url, ids["expired"]) == 0


def test_on_sqlite_a_run_being_changed_is_waited_for_and_then_judged_anew(
    sqlite_url: str,
) -> None:
    """SQLite has one writer: the clean's batch waits for the API's write, then sees it."""
    import sqlite3
    import threading

    from tests.cli.helpers import sqlite_file

    url = _upgraded(sqlite_url)
    ids = seed(url, expired=6)
    busy = ids["expired"][2]
    locked = threading.Event()

    def api_write() -> None:  # a retry: FAILED -> SCHEDULED, as set_state would write it
        connection = sqlite3.connect(sqlite_file(url), isolation_level=None, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "UPDATE flow_run SET state_type = 'SCHEDULED' WHERE id = ?", (busy.hex,)
            )
            locked.set()
            time.sleep(2)
            connection.execute("COMMIT")
        finally:
            connection.close()

    writer = threading.Thread(target=api_write)
    writer.start()
    assert locked.wait(10)
    ok(flowdb(url, "database", "clean", "--older-than", "7d", "-y"))
    writer.join()
    assert remaining(url, [busy]) == 1
    assert remaining(url, ids["expired"]) == 1
