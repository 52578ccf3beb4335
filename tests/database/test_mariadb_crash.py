"""Sudden death on MariaDB, where every DDL statement commits by itself.

A process killed (SIGKILL) after any statement leaves that statement done and the
migration's version not recorded. ``flowdb database current`` must show the migration
part way, and the next ``upgrade`` must end with exactly the schema of an uninterrupted
upgrade (and no progress record left).

* Deterministic: a chain of upgrades, each killed right after the first DDL statement
  no earlier run of the chain was killed after. A rerun skips what is done, so the
  chain kills once after every distinct DDL statement of the whole history, in order
  (an idempotent statement that every run repeats, such as creating the progress
  table if it is missing, is killed after once).
* Random: upgrades from empty killed after a random writing statement (DDL, data or
  bookkeeping), each then completed by a plain upgrade.

Both replay the history (an empty database would otherwise get the fresh install).
A downgrade from head to base is killed the same way, once after each of its distinct
DDL statements: each revision it reverts is marked first, ``upgrade`` refuses while
one is marked, and running the downgrade again finishes it.
The fresh install from the snapshot is killed after each of its writing statements in
turn: the database is then empty, or marked as a fresh install part way through, or at
head; the next upgrade (from the snapshot, or every other time a replay, as a flowdb
without that snapshot would do) ends with the schema of a replayed history.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests.dbtools import (
    create_mariadb_database,
    drop_mariadb_database,
    in_progress,
    revision_of,
    schema_snapshot,
)

pytestmark = pytest.mark.slow
HISTORY = load_history()
IDS = [revision.id for revision in HISTORY.revisions]


def killed_upgrade(
    url: str,
    after: int,
    *,
    ddl_only: bool,
    new_ddl_file: str = "",
    replay: bool = True,
    command: tuple[str, ...] = ("upgrade", "-y"),
) -> subprocess.CompletedProcess[str]:
    """``flowdb database upgrade -y``, SIGKILLed after its ``after``-th counted statement.

    ``replay``: an empty database gets the history replayed, not the snapshot.
    ``command``: another ``flowdb database`` command to run instead.
    """
    env = {
        **os.environ,
        "FLOWDB_DATABASE_URL": url,
        "KILL_AFTER_DDL_ONLY": "1" if ddl_only else "",
        "KILL_AFTER_NEW_DDL": new_ddl_file,
        "KILL_AFTER_REPLAY": "1" if replay else "",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.database.kill_after",
            str(after),
            "database",
            *command,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def upgrade(url: str, replay: bool = True) -> None:
    result = killed_upgrade(url, 0, ddl_only=True, replay=replay)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def clean_head() -> dict[str, object]:
    """The schema of an uninterrupted upgrade from empty."""
    url = create_mariadb_database()
    try:
        upgrade(url)
        return schema_snapshot(url)
    finally:
        drop_mariadb_database(url)


def assert_part_way_or_at_a_revision(url: str) -> None:
    """After a kill: a known revision, and at most the next migration part way through."""
    current = revision_of(url)
    assert current is None or current in IDS
    following = IDS[IDS.index(current) + 1] if current in IDS else IDS[0]
    assert {revision for revision, _, _ in in_progress(url)} <= {following}


def test_a_kill_after_every_ddl_statement_of_the_history(
    mariadb_url: str, clean_head: dict[str, object], tmp_path: Path
) -> None:
    killed_after = tmp_path / "killed-after.txt"
    kills = 0
    part_way_seen = 0
    while True:
        result = killed_upgrade(mariadb_url, 0, ddl_only=True, new_ddl_file=str(killed_after))
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        kills += 1
        assert_part_way_or_at_a_revision(mariadb_url)
        part_way_seen += bool(in_progress(mariadb_url))
        assert kills < 500, "the chain does not advance"
    assert revision_of(mariadb_url) == HISTORY.head
    assert schema_snapshot(mariadb_url) == clean_head
    # 65 distinct DDL statements in the history today (125 DDL statements run in all).
    assert kills == len(killed_after.read_text().splitlines()) >= 60
    assert part_way_seen > 0


@pytest.mark.parametrize("seed", range(4))
def test_random_kills_then_upgrade(
    seed: int, mariadb_url: str, clean_head: dict[str, object]
) -> None:
    point = random.Random(seed).randint(1, 300)
    result = killed_upgrade(mariadb_url, point, ddl_only=False)
    assert result.returncode in (0, -signal.SIGKILL), result.stderr
    assert_part_way_or_at_a_revision(mariadb_url)
    upgrade(mariadb_url)
    assert revision_of(mariadb_url) == HISTORY.head
    assert in_progress(mariadb_url) == ()
    assert schema_snapshot(mariadb_url) == clean_head


def test_a_kill_after_every_statement_of_the_fresh_install(clean_head: dict[str, object]) -> None:
    from flowdb.database import fresh
    from tests.dbtools import table_names

    url = create_mariadb_database()
    try:
        counted = killed_upgrade(url, 0, ddl_only=False, replay=False)
        assert counted.returncode == 0, counted.stderr
        writes = int(counted.stderr.strip().splitlines()[-1].removeprefix("writes="))
    finally:
        drop_mariadb_database(url)
    assert writes >= len(clean_head["tables"])  # type: ignore[arg-type]
    marked = 0
    for point in range(1, writes + 1):
        url = create_mariadb_database()
        try:
            result = killed_upgrade(url, point, ddl_only=False, replay=False)
            assert result.returncode == -signal.SIGKILL, (point, result.stderr)
            current, progress = revision_of(url), in_progress(url)
            if current is None and progress:
                assert progress == ((HISTORY.head, fresh.PHASE, 0),), point
                marked += 1
            else:
                assert (current, progress) in ((None, ()), (HISTORY.head, ())), point
            # Every other one is completed by a replay: an install whose snapshot is gone
            # (another flowdb version) is dropped first, then the history is replayed.
            upgrade(url, replay=point % 2 == 0)
            assert revision_of(url) == HISTORY.head and in_progress(url) == (), point
            assert schema_snapshot(url) == clean_head, f"kill after write {point}"
            assert "flowdb_migration_progress" not in table_names(url), point
        finally:
            drop_mariadb_database(url)
    assert marked >= writes - 8  # every kill between the mark and the last commit


def test_a_kill_after_every_ddl_statement_of_a_downgrade(mariadb_url: str, tmp_path: Path) -> None:
    from flowdb.database.status import DOWNGRADE_PHASE
    from flowdb.errors import ExitCode
    from tests.dbtools import table_names

    upgrade(mariadb_url)
    killed_after = tmp_path / "killed-after.txt"
    kills = refused = 0
    down = ("downgrade", "-y", "-r", "base")
    while True:
        result = killed_upgrade(
            mariadb_url, 0, ddl_only=True, new_ddl_file=str(killed_after), command=down
        )
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        kills += 1
        current, progress = revision_of(mariadb_url), in_progress(mariadb_url)
        assert current is None or current in IDS
        assert progress in ((), ((current, DOWNGRADE_PHASE, 0),)), (current, progress)
        if progress:
            again = killed_upgrade(mariadb_url, 0, ddl_only=True)
            assert again.returncode == ExitCode.REFUSED, again.stderr
            assert f"part way through reverting {current}" in again.stderr
            refused += 1
        assert kills < 500, "the chain does not advance"
    assert revision_of(mariadb_url) is None
    assert in_progress(mariadb_url) == ()
    assert table_names(mariadb_url) <= {
        "alembic_version",
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
    }
    assert kills == len(killed_after.read_text().splitlines()) >= 20
    assert refused > 0
