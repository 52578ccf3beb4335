"""Sudden death on MariaDB, where every DDL statement commits by itself.

A process killed (SIGKILL) after any statement leaves that statement done and the
migration's version not recorded. ``flowdb database current`` must show the migration
part way, and the next ``upgrade`` must end with exactly the schema of an uninterrupted
upgrade (and no progress record left).

* Deterministic: a chain of upgrades, each killed right after the first DDL statement
  no earlier run of the chain was killed after. A rerun skips what is done, so the
  chain kills once after every distinct DDL statement of the whole history, in order
  (an idempotent statement that every run repeats, such as creating the progress
  table if it is missing, is killed after once). The chain is cut into stretches of
  revisions (``CHAIN_STRETCHES``), one test item each, so they spread over xdist
  workers: an item upgrades without kills to the revision before its stretch, noting
  every DDL statement on the way (the statements the chain before it was killed
  after), then runs the chain up to its stretch's last revision. CI runs the first
  stretch and the last two (the last five revisions, cut in two so that they spread
  over the workers); ``-m exhaustive`` runs them all.
* Random: upgrades from empty killed after a random writing statement (DDL, data or
  bookkeeping), each then completed by a plain upgrade.

Both replay the history (an empty database would otherwise get the fresh install).
Every killed run is a real process, really SIGKILLed, forked from a helper that has
imported flowdb once (``tests.forkserver``): a kill costs no interpreter start.
A downgrade from head to base is killed the same way, once after each of its distinct
DDL statements: each revision it reverts is marked first, ``upgrade`` refuses while
one is marked (asked in the test process: the refusal is no kill's), and running the
downgrade again finishes it (in stretches of reverted
revisions, ``DOWN_STRETCHES``, as the upgrade chain).
The fresh install from the snapshot is killed after each of its writing statements in
turn: the database is then empty, or marked as a fresh install part way through, or at
head; the next upgrade (from the snapshot, or every other time a replay, as a flowdb
without that snapshot would do) ends with the schema of a replayed history. CI kills
after the first ``FRESH_EDGE`` writes (the progress table, the mark, the first
``CREATE``s: before the mark and with it committed) and the last ``FRESH_EDGE`` (the
version rows, the run record, the mark's removal, the drop: the end of the install),
completed by both the snapshot and a replay; the writes between are all ``CREATE``s
of the snapshot, each killed after in ``-m exhaustive`` (in blocks of ``FRESH_BLOCK``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests import forkserver
from tests.dbtools import (
    create_mariadb_database,
    drop_mariadb_database,
    in_progress,
    revision_of,
    schema_snapshot,
    shared_by_workers,
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
    record_only: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``flowdb database upgrade -y``, SIGKILLed after its ``after``-th counted statement.

    ``replay``: an empty database gets the history replayed, not the snapshot.
    ``command``: another ``flowdb database`` command to run instead.
    ``record_only``: note new DDL statements in ``new_ddl_file`` without dying.
    """
    env = {
        **os.environ,
        "FLOWDB_DATABASE_URL": url,
        "KILL_AFTER_DDL_ONLY": "1" if ddl_only else "",
        "KILL_AFTER_NEW_DDL": new_ddl_file,
        "KILL_AFTER_REPLAY": "1" if replay else "",
        "KILL_AFTER_RECORD_ONLY": "1" if record_only else "",
    }
    # A real process, really SIGKILLed, forked from a helper that has imported flowdb.
    return forkserver.run(
        ["-m", "tests.database.kill_after", str(after), "database", *command], env=env
    )


def upgrade(url: str, replay: bool = True) -> None:
    """``flowdb database upgrade`` to head, in this process: the kills are the child's.

    ``replay``: as ``kill_after``'s, no snapshot to install from (an empty database gets
    the history replayed; an interrupted fresh install is dropped first).
    """
    from flowdb.database import commands, fresh
    from flowdb.database.target import Database

    with pytest.MonkeyPatch.context() as patch:
        if replay:
            patch.setattr(fresh, "SNAPSHOT_FOLDER", Path(os.devnull) / "no-snapshots")
        commands.migrate(Database.from_url(url), "upgrade", "head")


@pytest.fixture(scope="session")
def clean_head(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The schema of an uninterrupted upgrade from empty (made once per run)."""

    def make() -> dict[str, object]:
        url = create_mariadb_database()
        try:
            upgrade(url)
            return schema_snapshot(url)
        finally:
            drop_mariadb_database(url)

    return shared_by_workers(tmp_path_factory, "mariadb-crash-clean-head", make)


def assert_part_way_or_at_a_revision(url: str) -> None:
    """After a kill: a known revision, and at most the next migration part way through."""
    current = revision_of(url)
    assert current is None or current in IDS
    following = IDS[IDS.index(current) + 1] if current in IDS else IDS[0]
    assert {revision for revision, _, _ in in_progress(url)} <= {following}


#: The chain's stretches: (index of the first revision, index of the last), in order.
#: The last five revisions are two stretches: as one they were the longest item of the
#: suite (about 275 s under load).
CHAIN_STRETCHES = [(0, 2), (3, 5), (6, 8), (9, 11), (12, 13), (14, len(IDS) - 1)]
#: The stretches CI runs; the others are ``exhaustive``.
CHAIN_SAMPLE = {0, len(CHAIN_STRETCHES) - 2, len(CHAIN_STRETCHES) - 1}


def test_the_chain_stretches_cover_the_history() -> None:
    covered = [i for first, last in CHAIN_STRETCHES for i in range(first, last + 1)]
    assert covered == list(range(len(IDS)))


@pytest.mark.parametrize(
    "stretch",
    [
        pytest.param(n, marks=() if n in CHAIN_SAMPLE else pytest.mark.exhaustive)
        for n in range(len(CHAIN_STRETCHES))
    ],
)
def test_a_kill_after_every_ddl_statement_of_the_history(
    stretch: int, mariadb_url: str, clean_head: dict[str, object], tmp_path: Path
) -> None:
    first, last = CHAIN_STRETCHES[stretch]
    target = IDS[last]
    killed_after = tmp_path / "killed-after.txt"
    if first > 0:  # where the chain before this stretch left the database, without kills
        before = killed_upgrade(
            mariadb_url,
            0,
            ddl_only=True,
            new_ddl_file=str(killed_after),
            command=("upgrade", "-y", "-r", IDS[first - 1]),
            record_only=True,
        )
        assert before.returncode == 0, before.stderr
        assert revision_of(mariadb_url) == IDS[first - 1]
    noted = len(killed_after.read_text().splitlines()) if killed_after.exists() else 0
    kills = 0
    part_way_seen = 0
    while True:
        result = killed_upgrade(
            mariadb_url,
            0,
            ddl_only=True,
            new_ddl_file=str(killed_after),
            command=("upgrade", "-y", "-r", target),
        )
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        kills += 1
        assert_part_way_or_at_a_revision(mariadb_url)
        part_way_seen += bool(in_progress(mariadb_url))
        assert kills < 500, "the chain does not advance"
    assert revision_of(mariadb_url) == target
    assert in_progress(mariadb_url) == ()
    if target == HISTORY.head:
        assert schema_snapshot(mariadb_url) == clean_head
    else:
        assert schema_snapshot(mariadb_url) == clean_schema_at(target)
    # Each run of the chain was killed after a new DDL statement, and the stretch has some.
    assert kills == len(killed_after.read_text().splitlines()) - noted > 0
    assert part_way_seen > 0


def test_the_chain_kills_after_every_distinct_ddl_statement_of_the_history(
    mariadb_url: str, tmp_path: Path
) -> None:
    # The stretches' kills add up to the DDL statements one replay notes: 65 distinct
    # ones in the history today (125 DDL statements run in all).
    noted = tmp_path / "noted.txt"
    result = killed_upgrade(
        mariadb_url, 0, ddl_only=True, new_ddl_file=str(noted), record_only=True
    )
    assert result.returncode == 0, result.stderr
    assert revision_of(mariadb_url) == HISTORY.head
    assert len(noted.read_text().splitlines()) >= 60


def clean_schema_at(revision: str) -> dict[str, object]:
    """The schema of an uninterrupted replay from empty to ``revision``."""
    url = create_mariadb_database()
    try:
        result = killed_upgrade(url, 0, ddl_only=True, command=("upgrade", "-y", "-r", revision))
        assert result.returncode == 0, result.stderr
        return schema_snapshot(url)
    finally:
        drop_mariadb_database(url)


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


#: Kill points at each end of the fresh install that CI runs (``head``, ``tail``).
FRESH_EDGE = 6
#: Kill points per ``-m exhaustive`` item between the ends; the last block takes the rest.
FRESH_BLOCK = 5
FRESH_BLOCKS = 3


@pytest.fixture(scope="session")
def fresh_install_writes() -> int:
    """How many writing statements the fresh install from the snapshot sends."""
    url = create_mariadb_database()
    try:
        counted = killed_upgrade(url, 0, ddl_only=False, replay=False)
        assert counted.returncode == 0, counted.stderr
        return int(counted.stderr.strip().splitlines()[-1].removeprefix("writes="))
    finally:
        drop_mariadb_database(url)


def fresh_points(part: str, writes: int) -> range:
    """The kill points (writes, from 1) of ``part``: ``head``, ``tail`` or ``block N``."""
    if part == "head":
        return range(1, FRESH_EDGE + 1)
    if part == "tail":
        return range(writes - FRESH_EDGE + 1, writes + 1)
    block = int(part.removeprefix("block "))
    first = FRESH_EDGE + 1 + block * FRESH_BLOCK
    last = writes - FRESH_EDGE if block == FRESH_BLOCKS - 1 else first + FRESH_BLOCK - 1
    return range(first, last + 1)


def test_the_fresh_install_parts_cover_every_write(fresh_install_writes: int) -> None:
    parts = ["head", *(f"block {n}" for n in range(FRESH_BLOCKS)), "tail"]
    covered = [point for part in parts for point in fresh_points(part, fresh_install_writes)]
    assert covered == list(range(1, fresh_install_writes + 1))


@pytest.mark.parametrize(
    "part",
    [
        "head",
        "tail",
        *(pytest.param(f"block {n}", marks=pytest.mark.exhaustive) for n in range(FRESH_BLOCKS)),
    ],
)
def test_a_kill_after_every_statement_of_the_fresh_install(
    part: str, fresh_install_writes: int, clean_head: dict[str, object]
) -> None:
    from flowdb.database.bookkeeping import FRESH_INSTALL_PHASE
    from tests.dbtools import table_names

    writes = fresh_install_writes
    assert writes >= len(clean_head["tables"])  # type: ignore[arg-type]
    assert writes > 2 * FRESH_EDGE + FRESH_BLOCK * (FRESH_BLOCKS - 1), "lower FRESH_*"
    points = fresh_points(part, writes)
    assert len({point % 2 for point in points}) == 2, "both completions: by snapshot, by replay"
    for point in points:
        url = create_mariadb_database()
        try:
            result = killed_upgrade(url, point, ddl_only=False, replay=False)
            assert result.returncode == -signal.SIGKILL, (point, result.stderr)
            current, progress = revision_of(url), in_progress(url)
            if current is None and progress:
                assert progress == ((HISTORY.head, FRESH_INSTALL_PHASE, 0),), point
            else:
                assert (current, progress) in ((None, ()), (HISTORY.head, ())), point
                # Every kill between the mark and the last commit leaves the mark: at most
                # the first and the last few statements leave none (8 in all, as before).
                assert point <= 8 or point > writes - 8, (point, current)
            # Every other one is completed by a replay: an install whose snapshot is gone
            # (another flowdb version) is dropped first, then the history is replayed.
            upgrade(url, replay=point % 2 == 0)
            assert revision_of(url) == HISTORY.head and in_progress(url) == (), point
            assert schema_snapshot(url) == clean_head, f"kill after write {point}"
            assert "flowdb_migration_progress" not in table_names(url), point
        finally:
            drop_mariadb_database(url)


#: The downgrade chain's stretches: revisions reverted, from index ``top`` down to
#: ``bottom`` (both included), in the order a downgrade to base reverts them.
DOWN_STRETCHES = [(len(IDS) - 1, 11), (10, 7), (6, 3), (2, 0)]
#: The stretches CI runs (the newest revisions); ``-m exhaustive`` runs the others.
DOWN_SAMPLE = {0}


def test_the_downgrade_stretches_cover_the_history() -> None:
    covered = [i for top, bottom in DOWN_STRETCHES for i in range(top, bottom - 1, -1)]
    assert covered == list(range(len(IDS) - 1, -1, -1))


@pytest.mark.parametrize(
    "stretch",
    [
        pytest.param(n, marks=() if n in DOWN_SAMPLE else pytest.mark.exhaustive)
        for n in range(len(DOWN_STRETCHES))
    ],
)
def test_a_kill_after_every_ddl_statement_of_a_downgrade(
    stretch: int, mariadb_url: str, tmp_path: Path
) -> None:
    from flowdb.database import commands
    from flowdb.database.bookkeeping import DOWNGRADE_PHASE
    from flowdb.database.target import Database
    from flowdb.errors import ExitCode, FlowdbError
    from tests.dbtools import table_names

    top, bottom = DOWN_STRETCHES[stretch]
    target = IDS[bottom - 1] if bottom > 0 else "base"
    upgrade(mariadb_url)
    killed_after = tmp_path / "killed-after.txt"
    if top < len(IDS) - 1:  # where the chain before this stretch left it, without kills
        before = killed_upgrade(
            mariadb_url,
            0,
            ddl_only=True,
            new_ddl_file=str(killed_after),
            command=("downgrade", "-y", "-r", IDS[top]),
            record_only=True,
        )
        assert before.returncode == 0, before.stderr
        assert revision_of(mariadb_url) == IDS[top]
    noted = len(killed_after.read_text().splitlines()) if killed_after.exists() else 0
    kills = refused = 0
    down = ("downgrade", "-y", "-r", target)
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
        if progress:  # an upgrade refuses (asked in this process: no kill is tested here)
            with pytest.raises(FlowdbError) as again:
                commands.migrate(Database.from_url(mariadb_url), "upgrade", "head")
            assert again.value.exit_code == ExitCode.REFUSED, str(again.value)
            assert f"part way through reverting {current}" in str(again.value)
            refused += 1
        assert kills < 500, "the chain does not advance"
    assert in_progress(mariadb_url) == ()
    if bottom == 0:
        assert revision_of(mariadb_url) is None
        assert table_names(mariadb_url) <= {
            "alembic_version",
            "flowdb_migration_run",
            "flowdb_bookkeeping_version",
            "flowdb_replica",
        }
    else:
        assert revision_of(mariadb_url) == target
    assert kills == len(killed_after.read_text().splitlines()) - noted > 0
    assert refused > 0


def test_a_downgrade_to_base_runs_at_least_20_distinct_ddl_statements(
    mariadb_url: str, tmp_path: Path
) -> None:
    # The stretches' kills add up to the DDL statements one downgrade to base notes.
    upgrade(mariadb_url)
    noted = tmp_path / "noted.txt"
    result = killed_upgrade(
        mariadb_url,
        0,
        ddl_only=True,
        new_ddl_file=str(noted),
        command=("downgrade", "-y", "-r", "base"),
        record_only=True,
    )
    assert result.returncode == 0, result.stderr
    assert revision_of(mariadb_url) is None
    assert len(noted.read_text().splitlines()) >= 20
