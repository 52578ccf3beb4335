"""Readers of where the database stands never fail because a migration runs meanwhile.

Another process downgrades the last revision (an online data migration, which creates
and drops flowdb's progress table) and upgrades it again, over and over, while threads
read the database's status, the readiness verdict, wait for head (as ``flowdb database
wait`` does) and start as a replica that does not migrate, and another process reads
the status, in a loop. Every
read must succeed and show a real revision, or that revision part way through.
``flowdb database check`` waits for a running migration and then compares, or says
that one runs (exit 6) when it runs past the lock timeout.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flowdb.database.history import load_history
from flowdb.database.interface import ensure_schema
from flowdb.database.target import Database
from flowdb.database.waiting import wait_for_head
from flowdb.errors import ExitCode
from flowdb.server.readiness import judge
from tests import forkserver
from tests.cli.helpers import flowdb, ok
from tests.dbtools import holder_description, lock_holder

#: How long the readers read at least while migrations go on (and at least one cycle
#: each way); they go on, up to ``READING_MOST`` seconds, until they have what the test
#: asserts (``enough``): on a quiet machine that is well within the least.
MIGRATING_SECONDS = 1.0
READING_MOST = 60.0
MIN_CYCLES = 1
#: When the migrating process stops by itself (a test that failed to stop it).
MOST_SECONDS = 180


@contextmanager
def migrating(url: str) -> Iterator[Callable[[], str]]:
    """A process going from head one revision down and up again while the block runs.

    The block starts it with ``go``; the function it gets stops the migrations after
    the current cycle and returns the process's last line (``cycles N``).
    """
    process = forkserver.Popen(
        ["-m", "tests.database.migration_cycler", str(MIN_CYCLES), str(MOST_SECONDS)],
        env={**os.environ, "FLOWDB_DATABASE_URL": url},
        stdin=subprocess.PIPE,
    )

    def stop() -> str:
        assert process.stdin is not None
        process.stdin.write("stop\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=MOST_SECONDS + 60)
        assert process.returncode == 0, err
        return out.strip()

    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "at head", process.stderr
        process.stdin.write("go\n")
        process.stdin.flush()
        yield stop
    finally:
        process.kill()
        process.wait()


def read_while_migrating(
    url: str,
    readers: list[tuple[str, Callable[[Database], str]]],
    enough: Callable[[Counter[str]], bool] = lambda _: True,
) -> tuple[Counter[str], list[str], str]:
    """Run each reader in a thread of its own until the migrations end.

    The migrations end once the threads' reads are ``enough`` after at least
    ``MIGRATING_SECONDS`` (or after ``READING_MOST``, and the test's assertions say what
    is missing). Returns what the reads saw (counted), every failure, and the cycler's
    last line.
    """
    seen: Counter[str] = Counter()
    failures: list[str] = []
    guard = threading.Lock()
    done = threading.Event()

    def loop(read: Callable[[Database], str], name: str) -> None:
        database = Database.from_url(url)
        while not done.is_set():
            try:
                result = read(database)
            except Exception as exc:  # every failure is the finding
                with guard:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
            else:
                with guard:
                    seen[f"{name} {result}"] += 1

    workers = [
        threading.Thread(target=loop, args=(read, name), daemon=True) for name, read in readers
    ]
    with migrating(url) as stop:
        process = forkserver.Popen(
            ["-m", "tests.database.status_reader"],
            env={**os.environ, "FLOWDB_DATABASE_URL": url},
            stdin=subprocess.PIPE,
            stderr=None,
        )
        try:
            for worker in workers:
                worker.start()
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            began = time.monotonic()
            time.sleep(MIGRATING_SECONDS)
            while time.monotonic() - began < READING_MOST:
                with guard:
                    if enough(seen):
                        break
                time.sleep(0.1)
            last = stop()
            done.set()
            for worker in workers:
                worker.join(timeout=60)
            out, _ = process.communicate("stop\n", timeout=60)
        finally:
            process.kill()
            process.wait()
    # The process's reads: "ok COUNT OWNER REVISION[ part way]" and "failed ..." lines.
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "failed":
            failures.append(f"process: {rest}")
        else:
            count, owner, result = rest.split(" ", 2)
            assert owner == "flowdb", line
            seen[f"process {result}"] += int(count)
    return seen, failures, last


def status_read(database: Database) -> str:
    """The revision read, or ``REVISION part way`` while a migration is part way through."""
    status = database.status()
    assert status.owner == "flowdb", status
    assert status.current is not None and database.history.knows(status.current), status
    if status.in_progress:
        return f"{status.in_progress[0][0]} part way"
    return status.current


def readiness_read(database: Database) -> str:
    """The readiness verdict's revision (ready or not, it must be answered)."""
    verdict = judge(database)
    assert verdict.current is not None and database.history.knows(verdict.current), verdict
    return verdict.current


def wait_read(database: Database) -> str:
    """``wait_for_head``, which must end at head."""
    status = wait_for_head(database, timeout=120, poll=0.05)
    return str(status.current)


def start_read(database: Database) -> str:
    """What a server replica that does not migrate runs on start: wait for head."""
    return str(ensure_schema(database, migrate=False).current)


def test_status_reads_never_fail_during_upgrades_and_downgrades(database_url: str) -> None:
    started = time.monotonic()
    history = load_history()
    previous = history.revisions[-2].id

    def enough(seen: Counter[str]) -> bool:
        """The reads the assertions below need: 40 of them, and both revisions seen."""
        both = seen[f"status {history.head}"] and seen[f"status {previous}"]
        return bool(both) and sum(seen.values()) >= 40

    seen, failures, last = read_while_migrating(
        database_url,
        # Status reads are the cheapest: most threads read it, to meet the race most often.
        [("status", status_read)] * 3
        + [("ready", readiness_read), ("wait", wait_read), ("start", start_read)],
        enough,
    )
    reads = sum(seen.values())
    print(f"{reads} reads in {time.monotonic() - started:.1f} s, {last}: {dict(seen)}")

    failed = f"{len(failures)} of {reads + len(failures)} reads failed: {failures[:5]}"
    assert failures == [], failed
    assert int(last.split()[1]) >= MIN_CYCLES
    assert reads >= 40, seen
    # The reads did overlap the migrations: they saw both revisions.
    assert seen[f"status {history.head}"] and seen[f"status {previous}"], seen
    assert set(seen) <= {
        f"{name} {revision}"
        for name in ("status", "ready", "wait", "start", "process")
        for revision in (history.head, previous, f"{history.head} part way")
    }, seen


def test_check_during_migrations_waits_for_them_and_compares(database_url: str) -> None:
    environment = {**os.environ, "FLOWDB_DATABASE_URL": database_url}
    command = ["-m", "flowdb", "database", "check"]
    with migrating(database_url) as stop:
        checks = []
        for _ in range(3):
            checks.append(forkserver.Popen(command, env=environment))
            time.sleep(0.3)
        # Each one meets a migration (the cycles hold the lock but for instants) and says
        # so, before anything else; then the migrations stop, at head.
        first_lines = [check.stderr.readline() for check in checks if check.stderr]
        stop()
        outputs = [check.communicate(timeout=240) for check in checks]

    for line in first_lines:
        assert line.startswith("Waiting for the end of the running migration held by"), line
    for check, (out, err) in zip(checks, outputs, strict=True):
        assert check.returncode == 0, out + err
        assert "matches the models" in out, out + err
        assert "Traceback" not in err


def test_check_says_a_migration_runs_past_the_lock_timeout(database_url: str) -> None:
    ok(flowdb(database_url, "database", "upgrade", "-y"))
    with lock_holder(database_url) as holder:
        started = time.monotonic()
        result = flowdb(
            database_url, "database", "check", env={"FLOWDB_MIGRATION_LOCK_TIMEOUT": "1"}
        )
        waited = time.monotonic() - started
        holder_text = holder_description(database_url, holder)

    assert result.returncode == ExitCode.BUSY, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for words in ("A migration is running", holder_text, "FLOWDB_MIGRATION_LOCK_TIMEOUT"):
        assert words in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert "rolled back" not in result.stderr
    assert 1 <= waited < 60
    # Once it has ended, check compares.
    assert "matches the models" in ok(flowdb(database_url, "database", "check")).stdout
