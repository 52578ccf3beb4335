"""SIGTERM after any statement of an online migration on MariaDB leaves a way out.

Where DDL commits by itself, a migration's schema changes commit as they run; what
makes the next ``upgrade`` resume is the migration's mark in ``flowdb_migration_progress``.
An interrupt (unlike a SIGKILL) then rolls back the transaction in flight, so the
mark must never be gone while the version row still says the migration has not run:
otherwise its tables belong to no revision, and the next upgrade refuses them as
another application's (exit 7).

Each trial runs the real console script (``tests/database/signal_after.py``) upgrading
``e9b3c7d5f2a4`` (an online migration that creates tables: the revision of the defect
seen once in 40 random signal trials) and sends it SIGTERM right after its N-th
statement, for every N of the run in turn: one line, exit 143, the database at either
revision with at most that migration marked, and a plain upgrade then ends with the
schema of an uninterrupted one. The statements are cut into blocks (one test item
each); CI runs the first block (the marks before the first DDL) and the last (the
migration's end: its mark's removal, the version update, the run record, the
commit); ``-m exhaustive`` runs them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dbtools import (
    create_mariadb_database,
    drop_mariadb_database,
    in_progress,
    revision_of,
    schema_snapshot,
    table_names,
)

pytestmark = pytest.mark.slow
BEFORE = "d2a6f4b8c1e3"
REVISION = "e9b3c7d5f2a4"
NEW_TABLES = {"work_pool", "work_queue", "worker"}
#: The blocks the statements are cut into, and the ones CI runs (the others: exhaustive).
BLOCKS = 8
SAMPLE = {0, BLOCKS - 1}


def signalled_upgrade(url: str, after: int, home: Path) -> subprocess.CompletedProcess[str]:
    """``flowdb database upgrade -y -r REVISION``, sent SIGTERM after its ``after``-th statement."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=url, FLOWDB_HOME=str(home), SIGNAL_AFTER_NOTE=str(home / "note"))
    home.mkdir(exist_ok=True)
    command = ["database", "upgrade", "-y", "-r", REVISION]
    return subprocess.run(
        [sys.executable, "-m", "tests.database.signal_after", str(after), *command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def migrate(url: str, direction: str, target: str) -> None:
    from flowdb.database import commands
    from flowdb.database.target import Database

    commands.migrate(Database.from_url(url), direction, target, use_snapshot=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, object]]:
    """How many statements the upgrade sends, and the schema it ends with, uninterrupted."""
    url = create_mariadb_database()
    try:
        migrate(url, "upgrade", BEFORE)
        result = signalled_upgrade(url, 0, tmp_path_factory.mktemp("count"))
        assert result.returncode == 0, result.stderr
        count = int(result.stderr.strip().splitlines()[-1].removeprefix("statements="))
        return count, schema_snapshot(url)
    finally:
        drop_mariadb_database(url)


@pytest.mark.parametrize(
    "block",
    [pytest.param(n, marks=() if n in SAMPLE else pytest.mark.exhaustive) for n in range(BLOCKS)],
)
def test_a_sigterm_after_any_statement_of_an_online_migration_leaves_a_way_out(
    block: int, run: tuple[int, dict[str, object]], mariadb_url: str, tmp_path: Path
) -> None:
    count, uninterrupted = run
    size = -(-count // BLOCKS)
    points = range(block * size + 1, min(count, (block + 1) * size) + 1)
    assert points, f"block {block} of {count} statements is empty"
    migrate(mariadb_url, "upgrade", BEFORE)
    for after in points:
        result = signalled_upgrade(mariadb_url, after, tmp_path / f"home{after}")
        note = (tmp_path / f"home{after}" / "note").read_text(encoding="utf-8")
        context = f"SIGTERM after statement {after} of {count} ({note}):\n{result.stderr}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 143, context
        assert "Traceback" not in result.stderr, context
        assert lines and lines[-1].startswith("Terminated; "), context
        assert sum(line.startswith("Terminated; ") for line in lines) == 1, context

        current, marked = revision_of(mariadb_url), in_progress(mariadb_url)
        assert current in (BEFORE, REVISION), context
        assert {revision for revision, _, _ in marked} <= {REVISION}, context
        if current == BEFORE and not marked:  # nothing of the migration may be left
            assert not NEW_TABLES & table_names(mariadb_url), f"unmarked tables; {context}"

        migrate(mariadb_url, "upgrade", REVISION)  # the way out: the same upgrade again
        assert revision_of(mariadb_url) == REVISION, context
        assert in_progress(mariadb_url) == (), context
        assert schema_snapshot(mariadb_url) == uninterrupted, context
        migrate(mariadb_url, "downgrade", BEFORE)
