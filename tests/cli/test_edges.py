"""The README's promises at the edges, in one table: each row one real CLI run that must fail well.

Every row of ``EDGES`` runs ``flowdb`` without a terminal (through its ``main()``, in the
test's process: ``tests.cli.helpers.flowdb``), against a database its ``setup``
prepared, and checks what README.md promises:

* the exit code of its kind (README: "Exit codes");
* exactly one ``Error:`` line on stderr holding the row's key words, no traceback;
* the database exactly as before (SQLite bytes, or the PostgreSQL schema, rows, revision).

To add a case: add a row (and, when no setup fits, a small setup function). Cases
that need more than one command, a second process or a signal follow the table.

Signals inside a data migration: CI runs a deterministic sample, each trial signalled
right after the upgrade's stderr names its moment. On every dialect it covers each kind
of moment inside the online data migrations (between backfill batches, an online index
build, the contract's DDL, between two revisions), with SIGINT and SIGTERM alternating
(each moment meets both over the dialects). ``-m exhaustive`` adds the other signal at
each moment, a backfill just starting and a later revision's data move, and the timed
trials over 30,000 runs. Signals before the lock, while waiting and after the last
revision are tests/cli/test_signals.py's and ``test_a_signal_while_only_waiting_...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database import history as history_module
from flowdb.database.history import load_history
from flowdb.errors import ExitCode
from tests.cli.helpers import (
    assert_one_line_error,
    current_revision,
    fingerprint,
    flowdb,
    ok,
    sqlite_file,
)
from tests.dbtools import (
    scalar,
    seed_flow_runs,
    set_revision,
    sync_engine,
    table_names,
    upgrade_forked,
)

IDS = [revision.id for revision in load_history().revisions]
HEAD = IDS[-1]
SECRET = "s3cret"
OTHER_APP_REVISION = "0th3r4pp0001"


@dataclass
class Scene:
    """What a setup works with: the database, a scratch folder, and where flowdb looks."""

    url: str
    tmp: Path
    home: Path
    migrations: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``flowdb ARGS`` on this scene's database, history and settings."""
        return flowdb(self.url, *args, home=self.home, env=self.env, migrations=self.migrations)

    def execute(self, *statements: str) -> None:
        """Run SQL on the database with a plain engine (what another application does)."""
        engine = sync_engine(self.url)
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement))
        finally:
            engine.dispose()


# --- setups ------------------------------------------------------------------------------


def empty(scene: Scene) -> None:
    """Nothing: a database flowdb has never touched."""


def at(revision: str) -> Callable[[Scene], None]:
    """A setup that upgrades the database to ``revision``."""

    def setup(scene: Scene) -> None:
        ok(scene.run("database", "upgrade", "-y", "-r", revision))

    return setup


def another_applications_database(scene: Scene) -> None:
    """Another Alembic-managed application: its own version row and a table called ``log``."""
    scene.execute(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO alembic_version VALUES ('{OTHER_APP_REVISION}')",
        "CREATE TABLE log (id INTEGER PRIMARY KEY, line VARCHAR(100))",
        "INSERT INTO log VALUES (1, 'theirs'), (2, 'also theirs'), (3, 'still theirs')",
    )


def a_foreign_table_named_like_a_later_one(scene: Scene) -> None:
    """flowdb before ``log`` exists, beside another application's table named ``log``."""
    at(IDS[1])(scene)
    scene.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, line VARCHAR(100))")


def only_a_foreign_log_table(scene: Scene) -> None:
    """No version table, but a table with one of flowdb's names."""
    scene.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, line VARCHAR(100))")


def truncated(scene: Scene) -> None:
    """A SQLite file cut short, as a full disk or a bad copy leaves it."""
    at(HEAD)(scene)
    path = sqlite_file(scene.url)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def holder_file_on_a_full_disk(scene: Scene) -> None:
    """Writing the lock's holder file fails with ENOSPC (it leads to /dev/full)."""
    at(IDS[2])(scene)
    path = sqlite_file(scene.url)
    path.with_name(path.name + ".migration-lock.json").symlink_to("/dev/full")


def copied_history(scene: Scene) -> Path:
    """A copy of the migrations folder for this scene (the history under test)."""
    copy = scene.tmp / "migrations"
    shutil.copytree(
        history_module.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    scene.migrations = copy
    return copy / "versions"


def add_revision_file(name: str, text: str) -> Callable[[Scene], None]:
    """A setup that adds one file to a copy of the history."""

    def setup(scene: Scene) -> None:
        (copied_history(scene) / name).write_text(text, encoding="utf-8")

    return setup


def copy_a_revision_file(scene: Scene) -> None:
    """A revision file copied under another name: two files, one revision id."""
    versions = copied_history(scene)
    original = next(versions.glob(f"*_{IDS[3]}_*.py"))
    shutil.copy(original, versions / f"2026_12_24_{IDS[3]}_copy.py")


def an_applied_revision_file_changed(scene: Scene) -> None:
    """A database upgraded part way, then the file of a revision it applied edited."""
    at(IDS[5])(scene)
    versions = copied_history(scene)
    edited = next(versions.glob(f"*_{IDS[2]}_*.py"))
    edited.write_text(edited.read_text(encoding="utf-8") + "\n# edited after release\n")


def ahead_of_this_flowdb(scene: Scene) -> None:
    """A database a newer flowdb upgraded: flowdb's tables, a revision this one lacks."""
    at(HEAD)(scene)
    set_revision(scene.url, "f00dfeedbeef")


SPLIT = "4e2b6f8c1a97"  # task_run.task_key split at its first ':' (an online data migration)
BEFORE_SPLIT = "3d1a5e7b9f86"


def split_part_way(scene: Scene) -> None:
    """The split killed part way: the revision before it, and its row in the progress table."""
    from flowdb.database.bookkeeping import CREATE_PROGRESS, PROGRESS_TABLE

    at(BEFORE_SPLIT)(scene)
    scene.execute(
        CREATE_PROGRESS,
        f"INSERT INTO {PROGRESS_TABLE} (revision, phase, rows_done, updated) "
        f"VALUES ('{SPLIT}', 'backfill', 1000, '2026-12-01T00:00:00+00:00')",
    )


def stamped_past_a_part_way_split(scene: Scene) -> None:
    """What a bare stamp over a killed split left: the version row at head, the split part way."""
    split_part_way(scene)
    set_revision(scene.url, HEAD)


def task_keys_that_collide_once_split(scene: Scene) -> None:
    """Task keys ``k`` and ``k:`` in one flow run: valid before the split, equal after it."""
    at(BEFORE_SPLIT)(scene)
    flow, run = uuid.uuid4().hex, uuid.uuid4().hex
    scene.execute(
        f"INSERT INTO flow (id, name) VALUES ('{flow}', 'etl')",
        "INSERT INTO flow_run (id, flow_id, name, expected_start_time) "
        f"VALUES ('{run}', '{flow}', 'r', '2026-01-01 00:00:00')",
        *(
            f"INSERT INTO task_run (id, flow_run_id, task_key, name) "
            f"VALUES ('{uuid.uuid4().hex}', '{run}', '{key}', 't')"
            for key in ("k", "k:", "other:1")
        ),
    )


ALL_DIALECTS = ("sqlite", "postgresql", "mariadb")

# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """One invocation that must end in one line, with its kind's exit code."""

    id: str
    args: tuple[str, ...]
    code: ExitCode
    words: tuple[str, ...]
    setup: Callable[[Scene], None] = empty
    dialects: tuple[str, ...] = ("sqlite", "postgresql")
    url: str | None = None  # instead of the test database (bad URLs)


SELF_PARENT = '''"""Names itself as its parent."""

revision: str = "5e1f5e1f5e1f"
down_revision: str | None = "5e1f5e1f5e1f"
'''
NOT_PYTHON = f'''"""A revision file with a """ in its docstring."""

revision: str = "badc0de00001"
down_revision: str | None = "{HEAD}"
'''

EDGES = [
    # Revision arguments: a typo never reverts anything.
    Edge(
        "bare number",
        ("database", "downgrade", "-y", "-r", "1"),
        ExitCode.USAGE,
        ("'1'", "-1"),
        at(HEAD),
    ),
    Edge(
        "short prefix",
        ("database", "downgrade", "-y", "-r", "1b5"),
        ExitCode.USAGE,
        ("'1b5'", "at least 4"),
        at(HEAD),
    ),
    Edge(
        "range without dry-run",
        ("database", "upgrade", "-y", "-r", "base:head"),
        ExitCode.USAGE,
        ("base:head", "--dry-run"),
    ),
    Edge("stamp asks", ("database", "stamp", "head"), ExitCode.USAGE, ("--yes",), at(IDS[2])),
    Edge(
        "unknown option",
        ("database", "upgrade", "--bogus"),
        ExitCode.USAGE,
        ("--bogus", "flowdb database upgrade --help"),
    ),
    Edge("unknown command", ("database", "frobnicate"), ExitCode.USAGE, ("frobnicate", "--help")),
    # Another application's database is refused by every command, reset included.
    Edge(
        "reset of a foreign database",
        ("database", "reset", "-y"),
        ExitCode.REFUSED,
        ("not flowdb's", OTHER_APP_REVISION, "--take-over-foreign-database"),
        another_applications_database,
    ),
    Edge(
        "stamp of a foreign database",
        ("database", "stamp", "-y", "head"),
        ExitCode.REFUSED,
        ("not flowdb's", "--take-over-foreign-database"),
        another_applications_database,
    ),
    Edge(
        "upgrade of a foreign database",
        ("database", "upgrade", "-y"),
        ExitCode.REFUSED,
        ("not flowdb's",),
        another_applications_database,
    ),
    Edge(
        "downgrade of a foreign database",
        ("database", "downgrade", "-y"),
        ExitCode.REFUSED,
        ("not flowdb's",),
        another_applications_database,
    ),
    Edge(
        "check of a foreign database",
        ("database", "check"),
        ExitCode.REFUSED,
        ("not flowdb's",),
        another_applications_database,
    ),
    Edge(
        "tables named like flowdb's",
        ("database", "upgrade", "-y"),
        ExitCode.REFUSED,
        ("log", "no alembic_version"),
        only_a_foreign_log_table,
    ),
    Edge(
        "a clash with a later migration",
        ("database", "upgrade", "-y"),
        ExitCode.REFUSED,
        ("log", "c5d8e3f2a9b1", "nothing was changed"),
        a_foreign_table_named_like_a_later_one,
    ),
    Edge(
        "a dry run of an upgrade that would clash",
        ("database", "upgrade", "--dry-run"),
        ExitCode.REFUSED,
        ("log", "c5d8e3f2a9b1", "nothing was changed"),
        a_foreign_table_named_like_a_later_one,
    ),
    # A damaged SQLite file: one line from every command that reads it.
    *[
        Edge(
            f"damaged file: {' '.join(args)}",
            ("database", *args),
            ExitCode.CORRUPT,
            ("damaged", "backup"),
            truncated,
            dialects=("sqlite",),
        )
        for args in (
            ("current",),
            ("history",),
            ("upgrade", "-y"),
            ("downgrade", "-y"),
            ("upgrade", "--dry-run"),
            ("check",),
        )
    ],
    # Memory databases vanish with the process: refused for migrations.
    *[
        Edge(
            f"memory database: {args[0]}",
            ("database", *args),
            ExitCode.USAGE,
            ("memory database", "FLOWDB_DATABASE_URL"),
            dialects=("sqlite",),
            url="sqlite://",
        )
        for args in (("upgrade", "-y"), ("stamp", "-y", "head"), ("reset", "-y"))
    ],
    Edge(
        "unencoded @ in the password",
        ("database", "current"),
        ExitCode.USAGE,
        ("%40", "percent-encode"),
        dialects=("postgresql",),
        url=f"postgresql://u:pa@ss/{SECRET}@127.0.0.1:1/flowdb",
    ),
    Edge(
        "nothing listens (check)",
        ("database", "check"),
        ExitCode.UNREACHABLE,
        ("Cannot connect",),
        dialects=("postgresql",),
        url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/flowdb",
    ),
    # The disk is full where flowdb writes its lock's holder file.
    Edge(
        "disk full",
        ("database", "upgrade", "-y"),
        ExitCode.DISK_FULL,
        ("No space left", "free space"),
        holder_file_on_a_full_disk,
        dialects=("sqlite",),
    ),
    # A revision file changed after the database applied it: refused, nothing changed.
    Edge(
        "an applied revision's file changed",
        ("database", "upgrade", "-y"),
        ExitCode.HISTORY_CHANGED,
        (IDS[2], "--accept-changed-revisions", "nothing was changed"),
        an_applied_revision_file_changed,
    ),
    # A snapshot is made from an empty database only.
    Edge(
        "snapshot of a database that is not empty",
        ("database", "snapshot"),
        ExitCode.REFUSED,
        ("not empty", "new one"),
        at(IDS[2]),
    ),
    # wait: one line and a non-zero exit when head does not come.
    Edge(
        "wait times out",
        ("database", "wait", "--timeout", "0.5"),
        ExitCode.NO,
        ("base", "behind head", "0.5 s"),
        at(IDS[1]),
    ),
    Edge(
        "wait on a database ahead of the code",
        ("database", "wait", "--timeout", "30"),
        ExitCode.REFUSED,
        ("f00dfeedbeef", "newer flowdb"),
        ahead_of_this_flowdb,
    ),
    Edge(
        "wait on an unreachable database",
        ("database", "wait", "--timeout", "1"),
        ExitCode.UNREACHABLE,
        ("Gave up waiting after 1 s", "Cannot connect"),
        dialects=("postgresql",),
        url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/flowdb",
    ),
    # A broken history is one line naming the files, for every command.
    Edge(
        "revision that is its own parent",
        ("database", "current"),
        ExitCode.CORRUPT,
        ("5e1f5e1f5e1f", "names itself"),
        add_revision_file("2026_12_24_5e1f5e1f5e1f_loop.py", SELF_PARENT),
        dialects=("sqlite",),
    ),
    Edge(
        "copied revision file",
        ("database", "upgrade", "-y"),
        ExitCode.CORRUPT,
        (IDS[3], "2 files", "copy"),
        copy_a_revision_file,
        dialects=("sqlite",),
    ),
    Edge(
        "revision file that is not Python",
        ("database", "history"),
        ExitCode.CORRUPT,
        ("badc0de00001", "not valid Python"),
        add_revision_file("2026_12_24_badc0de00001_bad.py", NOT_PYTHON),
        dialects=("sqlite",),
    ),
    # The server checks what it can before touching the database.
    Edge(
        "server on an unknown host",
        ("server", "start", "--host", "no-such-host.invalid", "--port", "4999"),
        ExitCode.USAGE,
        ("Cannot listen", "no-such-host.invalid", "--host"),
        dialects=("sqlite",),
    ),
    Edge(
        "server log level typo",
        ("server", "start", "--log-level", "loud"),
        ExitCode.USAGE,
        ("loud", "--log-level"),
        dialects=("sqlite",),
    ),
]


EDGES += [
    # A migration left part way: every command that cannot go on says what to run.
    Edge(
        "stamp over a part-way migration",
        ("database", "stamp", "-y", "head"),
        ExitCode.REFUSED,
        ("Cannot stamp", "part way", "'flowdb database upgrade'", f"downgrade -r {BEFORE_SPLIT}"),
        split_part_way,
        dialects=ALL_DIALECTS,
    ),
    Edge(
        "downgrade over a part-way migration",
        ("database", "downgrade", "-y"),
        ExitCode.REFUSED,
        ("part way", f"upgrade -r {SPLIT}", f"downgrade -r {BEFORE_SPLIT}"),
        split_part_way,
        dialects=ALL_DIALECTS,
    ),
    Edge(
        "upgrade over a stamp past a part-way migration",
        ("database", "upgrade", "-y"),
        ExitCode.REFUSED,
        ("part way", f"stamp {BEFORE_SPLIT}", "then 'flowdb database upgrade'"),
        stamped_past_a_part_way_split,
        dialects=ALL_DIALECTS,
    ),
    # Data a data migration cannot convert: refused before anything changes, rows named.
    Edge(
        "task keys that collide once split",
        ("database", "upgrade", "-y"),
        ExitCode.REFUSED,
        (SPLIT, "cannot convert 2 row(s)", "task_key 'k'", "task_key 'k:'", "Rename", "SELECT"),
        task_keys_that_collide_once_split,
        dialects=ALL_DIALECTS,
    ),
]


def latin1_default_charset(scene: Scene) -> None:
    """A MariaDB database created with another default character set than utf8mb4."""
    name = sa.make_url(scene.url).database
    scene.execute(f"ALTER DATABASE `{name}` CHARACTER SET latin1 COLLATE latin1_swedish_ci")


EDGES += [
    Edge(
        "wrong MariaDB password",
        ("database", "upgrade", "-y"),
        ExitCode.UNREACHABLE,
        ("Cannot connect", "wrong user or password"),
        url=f"mariadb://root:{SECRET}@127.0.0.1:3306/mysql",
        dialects=("mariadb",),
    ),
    Edge(
        "unknown MariaDB database",
        ("database", "current"),
        ExitCode.UNREACHABLE,
        ("unknown database",),
        url="mariadb://root@127.0.0.1:3306/flowdb_no_such_database",
        dialects=("mariadb",),
    ),
    # A port that is no port is a usage error, found before connecting, on every dialect.
    Edge(
        "PostgreSQL port out of range",
        ("database", "upgrade", "-y"),
        ExitCode.USAGE,
        ("'99999'", "port number", "FLOWDB_DATABASE_URL"),
        url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:99999/flowdb",
        dialects=("postgresql",),
    ),
    Edge(
        "MariaDB port out of range",
        ("database", "upgrade", "-y"),
        ExitCode.USAGE,
        ("'99999'", "port number", "FLOWDB_DATABASE_URL"),
        url=f"mariadb://root:{SECRET}@127.0.0.1:99999/mysql",
        dialects=("mariadb",),
    ),
    Edge(
        "a port that is not a number",
        ("database", "current"),
        ExitCode.USAGE,
        ("'33o6'", "port number"),
        url=f"mariadb://root:{SECRET}@127.0.0.1:33o6/mysql",
        dialects=("mariadb",),
    ),
    Edge(
        "MariaDB database not utf8mb4",
        ("database", "upgrade", "-y"),
        ExitCode.UNSUPPORTED,
        ("utf8mb4", "latin1"),
        latin1_default_charset,
        dialects=("mariadb",),
    ),
]


def edge_params() -> Iterator[object]:
    for edge in EDGES:
        for dialect in edge.dialects:
            yield pytest.param(edge, dialect, id=f"{dialect}-{edge.id}")


@pytest.mark.parametrize(("edge", "dialect"), list(edge_params()))
def test_edge(edge: Edge, dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if edge.url is not None:
        url = edge.url
    else:
        fixture = {"sqlite": "sqlite_url", "mariadb": "mariadb_url"}.get(dialect, "postgres_url")
        url = str(request.getfixturevalue(fixture))
    scene = Scene(url=url, tmp=tmp_path, home=tmp_path / "home")
    edge.setup(scene)
    before = fingerprint(url) if edge.url is None else None

    result = scene.run(*edge.args)

    assert_one_line_error(result, *edge.words)
    assert result.returncode == edge.code, f"exit {result.returncode}: {result.stderr}"
    assert SECRET not in result.stdout + result.stderr
    if before is not None:
        assert fingerprint(url) == before, f"{edge.id} changed the database"


# --- cases with more than one step ---------------------------------------------------------


def test_a_server_on_a_port_in_use_fails_before_migrating(sqlite_url: str, tmp_path: Path) -> None:
    scene = Scene(sqlite_url, tmp_path, tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = scene.run("server", "start", "--port", str(port))
    assert_one_line_error(result, "Cannot listen", f"127.0.0.1:{port}", "--port")
    assert result.returncode == ExitCode.USAGE
    assert not sqlite_file(sqlite_url).exists(), "the server migrated before failing"


def test_nothing_to_upgrade_needs_no_confirmation(database_url: str, tmp_path: Path) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(HEAD)(scene)
    result = ok(scene.run("database", "upgrade"))  # no terminal and no -y: nothing to ask
    assert "Nothing to upgrade" in result.stdout  # the result, once


def test_take_over_replaces_a_foreign_database_when_asked(
    database_url: str, tmp_path: Path
) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    another_applications_database(scene)
    ok(scene.run("database", "reset", "-y", "--take-over-foreign-database"))
    assert current_revision(database_url) == HEAD


def seed_states(url: str, runs: int) -> None:
    """``runs`` flow runs at head, each with two states in its history."""
    import datetime as dt

    run_ids = seed_flow_runs(url, runs, expected_start_time=dt.datetime.now(dt.UTC))
    state = sa.table(
        "flow_run_state",
        sa.column("id", sa.Uuid),
        sa.column("flow_run_id", sa.Uuid),
        sa.column("type"),
        sa.column("name"),
    )
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(state),
                [
                    {"id": uuid.uuid4(), "flow_run_id": i, "type": kind, "name": kind.title()}
                    for i in run_ids
                    for kind in ("PENDING", "RUNNING")
                ],
            )
    finally:
        engine.dispose()


def test_a_downgrade_shows_what_it_destroys_before_it_runs(
    database_url: str, tmp_path: Path
) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(HEAD)(scene)
    seed_states(database_url, 125)
    target = "4e2b6f8c1a97"  # reverts the flow_run_state table with its 250 rows

    preview = ok(scene.run("database", "downgrade", "--dry-run", "-r", target))
    comments = [line for line in preview.stdout.splitlines() if line.startswith("-- ")]
    reverted = len(IDS) - 1 - IDS.index(target)
    assert f"-- flowdb: downgrade from {HEAD} to {target} ({reverted} migrations)" in comments[0]
    assert any("drops table flow_run_state (250 rows)" in line for line in comments)
    assert current_revision(database_url) == HEAD  # a preview writes nothing

    refused = scene.run("database", "downgrade", "-r", target)  # no terminal, no -y
    assert_one_line_error(refused, "--yes")
    assert current_revision(database_url) == HEAD

    done = ok(scene.run("database", "downgrade", "-y", "-r", target))
    assert "drops table flow_run_state (250 rows)" in done.stdout
    assert f"reverts {HEAD}" in done.stdout
    assert current_revision(database_url) == target


def test_reset_lists_the_rows_it_drops(database_url: str, tmp_path: Path) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(HEAD)(scene)
    seed_states(database_url, 10)
    result = ok(scene.run("database", "reset", "-y"))
    assert "drops table flow_run (10 rows)" in result.stdout
    assert "drops table flow_run_state (20 rows)" in result.stdout


def seed_moved_data(scene: Scene, task_runs: int) -> None:
    """At head: ``task_runs`` task runs with dynamic keys; 3 schedules of 2 deployments."""
    flow, run = uuid.uuid4().hex, uuid.uuid4().hex
    deployments = [uuid.uuid4().hex, uuid.uuid4().hex]
    schedules = [(deployments[0], "2026-01-01"), (deployments[0], "2026-01-02")]
    schedules.append((deployments[1], "2026-01-01"))
    scene.execute(
        f"INSERT INTO flow (id, name) VALUES ('{flow}', 'etl')",
        "INSERT INTO flow_run (id, flow_id, name, expected_start_time) "
        f"VALUES ('{run}', '{flow}', 'r', '2026-01-01 00:00:00')",
        *(
            "INSERT INTO task_run (id, flow_run_id, task_key, dynamic_key, name) "
            f"VALUES ('{uuid.uuid4().hex}', '{run}', 't', '{n}', 't')"
            for n in range(task_runs)
        ),
        *(
            f"INSERT INTO deployment (id, flow_id, name) VALUES ('{d}', '{flow}', 'd{n}')"
            for n, d in enumerate(deployments)
        ),
        *(
            "INSERT INTO deployment_schedule (id, deployment_id, schedule, created) "
            f"VALUES ('{uuid.uuid4().hex}', '{d}', '{{\"interval\": 60}}', '{day} 00:00:00')"
            for d, day in schedules
        ),
    )


def test_a_downgrade_plan_labels_each_drop_and_shows_what_moves_back(
    database_url: str, tmp_path: Path
) -> None:
    """The plan is printed even when the command refuses (no terminal, no -y); it names the
    revision of each drop, and data the downgrade carries back is moved, not lost."""
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(HEAD)(scene)
    seed_moved_data(scene, task_runs=12)

    to_base = scene.run("database", "downgrade", "-r", "base")  # no terminal, no -y
    assert_one_line_error(to_base, "--yes")
    assert f"{IDS[0]}: drops table flow (1 row)" in to_base.stdout
    assert f"{IDS[0]}: drops table flow_run (1 row)" in to_base.stdout
    assert f"{IDS[1]}: drops table task_run (12 rows)" in to_base.stdout
    # Moved into tables this plan drops as well: lost after all.
    assert "move back" not in to_base.stdout

    refused = scene.run("database", "downgrade", "-r", BEFORE_SPLIT)
    assert_one_line_error(refused, "--yes")
    assert current_revision(database_url) == HEAD
    out = refused.stdout.splitlines()
    lost_at = out.index("data that will be lost:")
    moved_at = out.index("data that moves back (not lost):")
    schedules = next(i for i, line in enumerate(out) if "drops table deployment_schedule" in line)
    assert lost_at < schedules < moved_at
    assert out[schedules].strip() == (
        "7b5e9c2f4d3a: drops table deployment_schedule (3 rows): 2 move back into "
        "deployment.schedule (each deployment's oldest schedule), 1 lost"
    )
    dynamic = next(i for i, line in enumerate(out) if "drops column task_run.dynamic_key" in line)
    assert dynamic > moved_at
    assert (
        out[dynamic]
        .strip()
        .startswith(
            f"{SPLIT}: drops column task_run.dynamic_key (12 non-null values): all move back "
            "into task_run.task_key"
        )
    )

    ok(scene.run("database", "downgrade", "-y", "-r", BEFORE_SPLIT))
    engine = sync_engine(database_url)
    try:
        with engine.connect() as connection:
            keys = connection.execute(sa.text("SELECT task_key FROM task_run")).scalars().all()
            kept = connection.execute(
                sa.text("SELECT count(*) FROM deployment WHERE schedule IS NOT NULL")
            ).scalar()
    finally:
        engine.dispose()
    assert sorted(keys) == sorted(f"t:{n}" for n in range(12))  # what the plan said moved
    assert kept == 2


def test_a_foreign_tables_data_survives_every_refusal(database_url: str, tmp_path: Path) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    another_applications_database(scene)
    for args in (("reset", "-y"), ("stamp", "-y", "head"), ("upgrade", "-y")):
        assert scene.run("database", *args).returncode == ExitCode.REFUSED
    assert table_names(database_url) == {"alembic_version", "log"}
    assert scalar(database_url, "SELECT count(*) FROM log") == 3


def test_check_and_autogenerate_leave_other_applications_tables_alone(
    database_url: str, tmp_path: Path
) -> None:
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(HEAD)(scene)
    scene.execute("CREATE TABLE their_orders (id INTEGER PRIMARY KEY)")
    versions = copied_history(scene)

    assert "matches the models" in ok(scene.run("database", "check")).stdout
    ok(scene.run("database", "revision", "--autogenerate", "-m", "nothing new"))

    written = [p for p in versions.glob("*nothing_new.py")]
    assert len(written) == 1
    assert "their_orders" not in written[0].read_text(encoding="utf-8")
    assert "op.drop_table" not in written[0].read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "message", ['say """hi"""', "a back\\slash", 'ends with a quote"', "two\nlines"]
)
def test_revision_messages_are_escaped_into_valid_python(
    sqlite_url: str, tmp_path: Path, message: str
) -> None:
    scene = Scene(sqlite_url, tmp_path, tmp_path / "home")
    versions = copied_history(scene)
    result = ok(scene.run("database", "revision", "-m", message))
    assert "Wrote " in result.stdout
    history = load_history(versions)
    assert len(history.revisions) == len(IDS) + 1
    ok(scene.run("database", "history"))  # every later command still works


def test_revision_with_an_existing_id_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    from flowdb.database.alembic_commands import alembic_revision
    from flowdb.errors import UsageError

    scene = Scene(sqlite_url, tmp_path, tmp_path / "home")
    versions = copied_history(scene)

    def revision_files() -> list[Path]:
        # Python's own bytecode cache may appear when the history is loaded: not a file of ours.
        return sorted(path for path in versions.iterdir() if path.name != "__pycache__")

    before = revision_files()
    original = history_module.MIGRATIONS_FOLDER
    history_module.MIGRATIONS_FOLDER = versions.parent
    try:
        with pytest.raises(UsageError, match="exists already"):
            alembic_revision(message="again", rev_id=HEAD)
    finally:
        history_module.MIGRATIONS_FOLDER = original
    assert revision_files() == before


@pytest.mark.parametrize("bad", [None, 7, ""])
def test_the_python_api_refuses_what_is_not_a_revision(configured: str, bad: object) -> None:
    from flowdb.database.alembic_commands import alembic_stamp, alembic_upgrade
    from flowdb.errors import UnknownRevisionError

    for command in (alembic_upgrade, alembic_stamp):
        with pytest.raises(UnknownRevisionError, match="revision"):
            command(bad)  # type: ignore[arg-type]
    assert table_names(configured) == set()


# --- another connection holds the SQLite file --------------------------------------------


@pytest.fixture
def sqlite_writer(sqlite_url: str, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """Start a process that holds the SQLite file with ``BEGIN <mode>`` until the test ends."""
    processes: list[subprocess.Popen[str]] = []
    path = sqlite_file(sqlite_url)

    def hold(mode: str) -> None:
        code = (
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            f"c.execute('BEGIN {mode}')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "held"

    yield hold
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    ("mode", "args"),
    [
        ("EXCLUSIVE", ("current",)),
        ("EXCLUSIVE", ("upgrade", "--dry-run")),
        ("IMMEDIATE", ("upgrade", "-y")),
        ("IMMEDIATE", ("stamp", "-y", "head")),
    ],
)
def test_a_busy_sqlite_file_is_waited_for_visibly_and_within_the_timeout(
    sqlite_url: str,
    tmp_path: Path,
    sqlite_writer: Callable[[str], None],
    mode: str,
    args: tuple[str, ...],
) -> None:
    scene = Scene(sqlite_url, tmp_path, tmp_path / "home")
    at(IDS[2])(scene)
    if mode == "EXCLUSIVE":
        # Readers wait for a writer only in the rollback-journal mode a file made by an
        # older flowdb may still be in (flowdb's files are WAL: test_configuration.py).
        sqlite3.connect(sqlite_file(sqlite_url)).execute("PRAGMA journal_mode=DELETE").close()
    sqlite_writer(mode)
    scene.env["FLOWDB_MIGRATION_LOCK_TIMEOUT"] = "1.5"

    started = time.monotonic()
    result = scene.run("database", *args)
    waited = time.monotonic() - started

    assert result.returncode == ExitCode.BUSY, result.stderr
    assert "Waiting for the database held by another connection" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "FLOWDB_MIGRATION_LOCK_TIMEOUT" in errors[0], result.stderr
    # What was waited for is the database itself, locked by the other connection.
    assert f"waiting for the database at {sqlite_file(sqlite_url)}, locked by" in errors[0]
    assert "Traceback" not in result.stderr
    assert waited < 30  # the timeout was honoured (SQLite's own wait would be minutes)
    assert sqlite3.connect(sqlite_file(sqlite_url)).execute("SELECT 1").fetchone() == (1,)


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------------
#
# A signal inside a data-migrating upgrade (from IDS[8], before the online data migrations,
# over seeded flow runs): each trial is one real ``python -m flowdb database upgrade -y``
# signalled as soon as its stderr shows the line of a moment (``MOMENTS``), so where the
# signal lands does not depend on timing or load. CI runs, on each dialect, the four kinds
# of moment inside a data migration (between backfill batches, an index build, the
# contract's DDL, between two revisions), the signal alternating between SIGINT and
# SIGTERM (shifted per dialect, so each moment meets both signals over the dialects).
# ``-m exhaustive`` adds the other signal at each of those, two more moments of the same
# kinds (a backfill starting, a later revision's data move), and the original timed trials
# over 30,000 runs. The moments before the lock, waiting for it and after the last
# revision are test_signals.py's (a time-spread sample on each dialect) and
# ``test_a_signal_while_only_waiting_says_nothing_was_changed`` below.

#: Flow runs seeded for a moment trial, and the child's batch size: five backfill batches,
#: so that "between batches" exists and stays cheap to finish afterwards.
MOMENT_RUNS = 1_000
MOMENT_BATCH = "200"
#: A moment of the upgrade: the stderr line (a part of it) right after which the signal goes.
MOMENTS = {
    "between backfill batches": "flow_run: 200 rows so far (batch 1)",
    "an index build": "3d1a5e7b9f86: phase index",
    "the contract's DDL": "3d1a5e7b9f86: phase contract",
    "between revisions": "\u2191 3d1a5e7b9f86",
    "a backfill starting": "3d1a5e7b9f86: phase backfill",
    "a later revision's data move": "5f3c7a9d2b18: phase backfill",
}
#: The moments CI runs on every dialect (one of each kind); the others are ``exhaustive``.
CI_MOMENTS = list(MOMENTS)[:4]


def moment_params() -> Iterator[object]:
    """(dialect, moment, signal) items: CI's one signal per moment, the rest ``exhaustive``."""
    for shift, dialect in enumerate(ALL_DIALECTS):
        for index, moment in enumerate(MOMENTS):
            for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
                sampled = moment in CI_MOMENTS and (index + shift) % 2 == (signum == signal.SIGTERM)
                yield pytest.param(
                    dialect,
                    moment,
                    signum,
                    code,
                    id=f"{dialect}-{moment.replace(' ', '-')}-{signal.Signals(signum).name}",
                    marks=[] if sampled else [pytest.mark.exhaustive],
                )


def test_ci_s_moments_meet_both_signals_on_each_dialect() -> None:
    ci = [param.values for param in moment_params() if not param.marks]  # type: ignore[attr-defined]
    for dialect in ALL_DIALECTS:
        ours = [(moment, signum) for d, moment, signum, _ in ci if d == dialect]
        assert sorted(moment for moment, _ in ours) == sorted(CI_MOMENTS)
        assert {signum for _, signum in ours} == {signal.SIGINT, signal.SIGTERM}
    assert {(moment, signum) for _, moment, signum, _ in ci} == {
        (moment, signum) for moment in CI_MOMENTS for signum in (signal.SIGINT, signal.SIGTERM)
    }


def interrupt(
    scene: Scene, signum: int, after: str | None, env: dict[str, str]
) -> tuple[str, str, int]:
    """Start ``upgrade -y``, signal it once stderr shows ``after`` (or its first line).

    Returns its stdout, its whole stderr and its exit code.
    """
    process = upgrade_forked(env)
    assert process.stderr is not None
    seen = ""
    try:
        for line in process.stderr:
            seen += line
            if after is None or after in line:
                break
        else:
            raise AssertionError(f"the upgrade never said {after!r}:\n{seen}")
        process.send_signal(signum)
        out, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return out, seen + rest, process.returncode


def assert_one_line_at_a_revision(
    scene: Scene, signum: int, code: int, returncode: int, out: str, err: str
) -> str:
    """The interrupted upgrade's ending, and the database it left, finished by a rerun.

    Returns the revision the signal left the database at.
    """
    assert returncode == code, err
    assert "Traceback" not in out + err, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    what = "Interrupted" if signum == signal.SIGINT else "Terminated"
    assert last.startswith(f"{what}; the database stays at the last migration"), err
    revision = current_revision(scene.url)
    assert revision in IDS
    ok(scene.run("database", "upgrade", "-y"))  # finishes a migration left part way
    return str(revision)


def child_env(scene: Scene, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=scene.url, FLOWDB_HOME=str(scene.home), **settings)
    return env


class BeforeTheDataMigrations:
    """Per worker and dialect, one database at IDS[8] holding ``MOMENT_RUNS`` flow runs.

    Building it costs seconds (nine revisions; five on MariaDB), so a moment trial takes
    it as the last one left it: at IDS[8] again, after the trial's own upgrade to head
    and downgrade back. A trial that failed part way leaves it unready, and the next
    one empties it and builds it again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.urls: dict[str, str] = {}
        self.ready: set[str] = set()

    def take(self, dialect: str) -> str:
        """The dialect's database at IDS[8], seeded; unready until ``give_back``."""
        from tests.dbtools import (
            create_mariadb_database,
            create_postgres_database,
            reset_mariadb_database,
            reset_postgres_database,
        )

        if dialect not in self.urls:
            create = {
                "sqlite": lambda: f"sqlite:///{self.folder / 'flowdb.db'}",
                "postgresql": create_postgres_database,
                "mariadb": create_mariadb_database,
            }[dialect]
            self.urls[dialect] = create()
        url = self.urls[dialect]
        if dialect not in self.ready:
            if dialect == "sqlite":
                sqlite_file(url).unlink(missing_ok=True)
            elif dialect == "postgresql":
                reset_postgres_database(url)
            else:
                self.urls[dialect] = url = reset_mariadb_database(url)
            at(IDS[8])(Scene(url, self.folder, self.folder / "home"))
            seed_flow_runs(url, MOMENT_RUNS)
        self.ready.discard(dialect)
        return url

    def give_back(self, dialect: str) -> None:
        """The trial left the database as it took it (at IDS[8], the runs kept)."""
        self.ready.add(dialect)

    def close(self) -> None:
        from tests.dbtools import drop_mariadb_database, drop_postgres_database

        for dialect, url in self.urls.items():
            if dialect == "postgresql":
                drop_postgres_database(url)
            elif dialect == "mariadb":
                drop_mariadb_database(url)


@pytest.fixture(scope="session")
def before_the_data_migrations(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BeforeTheDataMigrations]:
    prepared = BeforeTheDataMigrations(tmp_path_factory.mktemp("before-data-migrations"))
    try:
        yield prepared
    finally:
        prepared.close()


@pytest.mark.slow
@pytest.mark.parametrize(("dialect", "moment", "signum", "code"), list(moment_params()))
def test_a_signal_at_a_moment_of_a_data_migration_ends_in_one_line(
    dialect: str,
    moment: str,
    signum: int,
    code: int,
    tmp_path: Path,
    before_the_data_migrations: BeforeTheDataMigrations,
) -> None:
    """A signal right after the upgrade says ``moment`` ends it in one line at a revision."""
    url = before_the_data_migrations.take(dialect)  # at IDS[8], before the data migrations
    scene = Scene(url, tmp_path, tmp_path / "home")
    env = child_env(scene, FLOWDB_MIGRATION_BATCH_SIZE=MOMENT_BATCH)

    out, err, returncode = interrupt(scene, signum, MOMENTS[moment], env)

    assert "Upgrade finished" not in out, f"the signal after {moment!r} came too late:\n{err}"
    assert_one_line_at_a_revision(scene, signum, code, returncode, out, err)
    assert current_revision(url) == HEAD
    ok(scene.run("database", "downgrade", "-y", "-r", IDS[8]))
    assert current_revision(url) == IDS[8]
    before_the_data_migrations.give_back(dialect)


@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_at_any_moment_ends_in_one_line(
    database_url: str, tmp_path: Path, signum: int, code: int
) -> None:
    """Interrupt upgrades at several moments; each ends in one line at a known revision."""
    scene = Scene(database_url, tmp_path, tmp_path / "home")
    at(IDS[8])(scene)  # before the data migrations
    seed_flow_runs(database_url, 30_000)
    landed: set[str | None] = set()
    for delay in (0.0, 0.01, 0.03, 0.08, 0.15):
        process = upgrade_forked(child_env(scene))
        assert process.stderr is not None
        first_step = process.stderr.readline()  # the first migration's first phase began
        time.sleep(delay)  # then somewhere inside it or the following ones
        process.send_signal(signum)
        out, rest = process.communicate(timeout=120)
        err = first_step + rest
        if "Upgrade finished" in out:  # done before the signal: step back and go again
            ok(scene.run("database", "downgrade", "-y", "-r", IDS[8]))
            continue
        landed.add(assert_one_line_at_a_revision(scene, signum, code, process.returncode, out, err))
        ok(scene.run("database", "downgrade", "-y", "-r", IDS[8]))
    assert landed, "no signal landed inside an upgrade"
    ok(scene.run("database", "upgrade", "-y"))
    assert current_revision(database_url) == HEAD


def test_a_signal_while_only_waiting_says_nothing_was_changed(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A command that changes nothing does not claim a migration was interrupted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=sqlite_url, FLOWDB_HOME=str(tmp_path / "home"))
    process = subprocess.Popen(
        [sys.executable, "-m", "flowdb", "database", "wait", "--timeout", "120"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # started, and waiting for an empty database to reach head
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)

    assert process.returncode == ExitCode.INTERRUPTED, err
    assert err.rstrip().splitlines()[-1] == "Interrupted; nothing was changed.", err
