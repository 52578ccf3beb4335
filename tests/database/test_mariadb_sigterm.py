"""SIGTERM after any statement of a MariaDB upgrade or downgrade leaves a way out.

Where DDL commits by itself, a migration's schema changes commit as they run; what
makes the next command resume is the migration's mark in ``flowdb_migration_progress``.
An interrupt (unlike a SIGKILL) then rolls back the transaction in flight, so no
statement may commit the version row apart from the marks that go with it: a mark
removed before the version moved left an upgrade's tables belonging to no revision
(the next upgrade refused them as another application's, exit 7); a version moved
before a downgrade's marks did left a revision marked that no command could finish.

Each trial runs the real console script (``tests/database/signal_after.py``) in a real
process, forked from a helper that has imported flowdb once (``tests.forkserver``: no
interpreter start per trial), and sends it SIGTERM right after its N-th statement: an
upgrade of ``e9b3c7d5f2a4`` (an online migration that creates tables: the revision of
the defect seen once in 40 random signal trials) and a downgrade of two revisions from
it. Then: one line, exit 143, the database at a revision of the run with at most the
right migration marked, and the same command run again ends with the schema of an
uninterrupted run and no mark.
CI signals after each writing statement (not a ``SELECT``, ``SHOW`` or ``DESCRIBE``)
near a version update, where a step's bookkeeping commits: the DDL before it, the marks'
removal and insertion, the version update itself, the progress table's drop and the
run record; one item per version update, so that they spread over the workers. A signal
after a read lands between the same two writes as one after the write before it (the
same statements committed, the same transaction rolled back): ``-m exhaustive`` signals
after those too, as after every statement of the run, in blocks.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import forkserver
from tests.dbtools import (
    create_mariadb_database,
    drop_mariadb_database,
    in_progress,
    revision_of,
    schema_snapshot,
    table_names,
)

pytestmark = pytest.mark.slow
REVISION = "e9b3c7d5f2a4"
NEW_TABLES = {"work_pool", "work_queue", "worker"}
#: How many statements before and after each version update CI signals after.
NEAR = (4, 8)
#: The blocks of ``-m exhaustive`` (every statement of the run).
BLOCKS = 6
#: Statements that only read (a signal after one is ``exhaustive`` only).
READS = ("SELECT", "SHOW", "DESCRIBE")
#: The version updates of each case (one CI item each).
UPDATES = {"upgrade": 1, "downgrade": 2}


@dataclass(frozen=True)
class Case:
    """A command run from ``start``; ``end`` is where it takes the database."""

    start: str
    command: tuple[str, ...]
    end: str
    #: The revisions the database may be at after an interrupt, oldest first.
    between: tuple[str, ...]


CASES = {
    "upgrade": Case(
        "d2a6f4b8c1e3", ("upgrade", "-y", "-r", REVISION), REVISION, ("d2a6f4b8c1e3", REVISION)
    ),
    "downgrade": Case(
        REVISION,
        ("downgrade", "-y", "-r", "c5d8e3f2a9b1"),
        "c5d8e3f2a9b1",
        ("c5d8e3f2a9b1", "d2a6f4b8c1e3", REVISION),
    ),
}


def signalled(url: str, case: Case, after: int, home: Path) -> subprocess.CompletedProcess[str]:
    """``flowdb database <case.command>``, sent SIGTERM after its ``after``-th statement."""
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=url, FLOWDB_HOME=str(home), SIGNAL_AFTER_NOTE=str(home / "note"))
    if after == 0:
        env["SIGNAL_AFTER_LIST"] = str(home / "statements")
    # A real process, sent a real SIGTERM, forked from a helper that has imported flowdb.
    return forkserver.run(
        ["-m", "tests.database.signal_after", str(after), "database", *case.command], env=env
    )


def move_to(url: str, revision: str) -> None:
    """Bring the database to ``revision`` (replaying the history, never the snapshot)."""
    from flowdb.database import commands
    from flowdb.database.target import Database

    database = Database.from_url(url)
    current = database.status().current
    history = [revision.id for revision in database.history.revisions]
    position = -1 if current is None else history.index(current)
    direction = "upgrade" if history.index(revision) >= position else "downgrade"
    commands.migrate(database, direction, revision, use_snapshot=False)


@dataclass(frozen=True)
class Run:
    """An uninterrupted run of a case: its statements and the schema it ends with."""

    statements: list[str]
    schema: dict[str, object]

    def version_updates(self) -> list[int]:
        """The statement numbers (from 1) of the version updates."""
        return [
            number
            for number, text in enumerate(self.statements, start=1)
            if text.startswith(("UPDATE alembic_version", "INSERT INTO alembic_version"))
        ]

    def near_version_update(self, index: int) -> list[int]:
        """The writing statements' numbers (from 1) near the ``index``-th version update."""
        update, (before, after) = self.version_updates()[index], NEAR
        return [
            n
            for n in range(max(1, update - before), min(len(self.statements), update + after) + 1)
            if not self.statements[n - 1].startswith(READS)
        ]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each case run without a signal (the count run of ``signal_after``)."""
    found = {}
    for name, case in CASES.items():
        url = create_mariadb_database()
        try:
            move_to(url, case.start)
            home = tmp_path_factory.mktemp(name)
            result = signalled(url, case, 0, home)
            assert result.returncode == 0, result.stderr
            statements = (home / "statements").read_text(encoding="utf-8").splitlines()
            count = int(result.stderr.strip().splitlines()[-1].removeprefix("statements="))
            assert len(statements) == count
            found[name] = Run(statements, schema_snapshot(url))
        finally:
            drop_mariadb_database(url)
    return found


def points(run: Run, part: str) -> list[int]:
    """The statement numbers a test item signals after."""
    if part.startswith("near version update "):
        return run.near_version_update(int(part.removeprefix("near version update ")))
    block, size = int(part.removeprefix("block ")), -(-len(run.statements) // BLOCKS)
    return list(range(block * size + 1, min(len(run.statements), (block + 1) * size) + 1))


PARTS = [
    pytest.param(name, f"near version update {n}", id=f"{name}-near-update-{n}")
    for name, count in UPDATES.items()
    for n in range(count)
] + [
    pytest.param(name, f"block {n}", id=f"{name}-block-{n}", marks=pytest.mark.exhaustive)
    for name in CASES
    for n in range(BLOCKS)
]


def test_each_case_has_the_version_updates_its_items_expect(runs: dict[str, Run]) -> None:
    assert {name: len(run.version_updates()) for name, run in runs.items()} == UPDATES


@pytest.mark.parametrize(("name", "part"), PARTS)
def test_a_sigterm_after_any_statement_leaves_a_way_out(
    name: str, part: str, runs: dict[str, Run], mariadb_url: str, tmp_path: Path
) -> None:
    case, run = CASES[name], runs[name]
    chosen = points(run, part)
    assert chosen, f"{name}: no statements in {part}"
    if part.startswith("near version update "):  # the update, with writes on each side
        update = run.version_updates()[int(part.removeprefix("near version update "))]
        assert min(chosen) < update in chosen and max(chosen) > update, (name, part, chosen)
    move_to(mariadb_url, case.start)
    for after in chosen:
        home = tmp_path / f"home{after}"
        result = signalled(mariadb_url, case, after, home)
        note = (home / "note").read_text(encoding="utf-8")
        context = f"{name}, SIGTERM after statement {after} ({note}):\n{result.stderr}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 143, context
        assert "Traceback" not in result.stderr, context
        assert lines and lines[-1].startswith("Terminated; "), context
        assert sum(line.startswith("Terminated; ") for line in lines) == 1, context

        current, marked = revision_of(mariadb_url), in_progress(mariadb_url)
        assert current in case.between, context
        if name == "upgrade":
            assert {revision for revision, _, _ in marked} <= {REVISION}, context
            if current == case.start and not marked:  # nothing of the migration left
                assert not NEW_TABLES & table_names(mariadb_url), f"unmarked tables; {context}"
        else:  # only the revision the version row holds may be part way reverted
            assert {(revision, phase) for revision, phase, _ in marked} <= {
                (current, "downgrade")
            }, context

        move_to(mariadb_url, case.end)  # the way out: the same command again
        assert revision_of(mariadb_url) == case.end, context
        assert in_progress(mariadb_url) == (), context
        assert schema_snapshot(mariadb_url) == run.schema, context
        move_to(mariadb_url, case.start)
