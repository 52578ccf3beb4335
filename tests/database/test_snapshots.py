"""The snapshots fresh installs run are what replaying the history builds, on each dialect.

For each dialect: one database gets the history replayed, another the snapshot; their
normalised catalogues (``Dialect.catalogue``) must be equal, and a difference is named
(the first one). A snapshot made from other revision files than the installed ones is
stale: the test says how to regenerate it, and upgrades replay instead of using it.
Where DDL commits by itself (MariaDB) an install cannot be one transaction: a failed
one is undone, and a killed one is completed by the next upgrade.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from flowdb.database import commands, fresh
from flowdb.database.bookkeeping import FRESH_INSTALL_PHASE
from flowdb.database.history import load_history
from flowdb.database.target import Database


def test_every_snapshot_was_made_from_the_installed_history() -> None:
    history = load_history()
    for name in ("sqlite", "postgresql", "mariadb"):
        snapshot = fresh.read_snapshot(fresh.SNAPSHOT_FOLDER / f"{name}.sql")
        assert snapshot is not None, f"snapshots/{name}.sql is missing: run {fresh.REGENERATE}"
        assert snapshot.fits(history), (
            f"snapshots/{name}.sql was made for head {snapshot.head} from other revision files "
            f"than the installed ones (head {history.head}); regenerate it on an empty "
            f"{name} database: FLOWDB_DATABASE_URL=... {fresh.REGENERATE} (see README)"
        )


def replayed_and_installed(url: str, other_url: str) -> tuple[Database, Database]:
    """``url`` with the history replayed, ``other_url`` fresh-installed from the snapshot."""
    replayed = Database.from_url(url)
    commands.migrate(replayed, "upgrade", "head", use_snapshot=False)
    installed = Database.from_url(other_url)
    snapshot = fresh.usable_snapshot(installed)
    assert snapshot is not None
    commands.migrate(installed, "upgrade", "head")
    return replayed, installed


@pytest.fixture
def second_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another empty database of the same dialect as ``database_url``."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'second.db'}"
    from tests import dbtools

    if database_url.startswith("mariadb"):
        create, drop = dbtools.create_mariadb_database, dbtools.drop_mariadb_database
    else:
        create, drop = dbtools.create_postgres_database, dbtools.drop_postgres_database
    url = create()
    request.addfinalizer(lambda: drop(url))
    return url


def test_a_fresh_install_equals_replaying_the_history(database_url: str, second_url: str) -> None:
    replayed, installed = replayed_and_installed(database_url, second_url)

    expected, actual = fresh.catalogue(replayed), fresh.catalogue(installed)

    assert expected["tables"], "the catalogue read no tables"
    difference = fresh.first_difference(expected, actual)
    assert difference is None, (
        f"snapshots/{installed.dialect.name}.sql differs from replaying the history: "
        f"{difference}; regenerate it with {fresh.REGENERATE} (see README)"
    )
    assert installed.status().current == load_history().head


def test_an_edited_snapshot_is_caught_naming_the_first_difference(
    database_url: str, second_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "snapshots"
    shutil.copytree(fresh.SNAPSHOT_FOLDER, folder)
    name = Database.from_url(database_url).dialect.name
    path = folder / f"{name}.sql"
    text = path.read_text(encoding="utf-8")
    # A hand edit: the flow table's name column gets longer.
    edited = re.sub(
        r'(\bname"? (?:VARCHAR|character varying)\()255\)', r"\g<1>300)", text, count=1, flags=re.I
    )
    assert edited != text
    path.write_text(edited, encoding="utf-8")
    monkeypatch.setattr(fresh, "SNAPSHOT_FOLDER", folder)

    replayed, installed = replayed_and_installed(database_url, second_url)
    difference = fresh.first_difference(fresh.catalogue(replayed), fresh.catalogue(installed))

    assert difference is not None
    assert difference.startswith("tables.")
    assert "300" in difference and "255" in difference


def test_a_stale_snapshot_is_not_used(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "snapshots"
    shutil.copytree(fresh.SNAPSHOT_FOLDER, folder)
    path = folder / "sqlite.sql"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = [
        ("-- history: 0" + "0" * 63) if line.startswith("-- history:") else line for line in lines
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(fresh, "SNAPSHOT_FOLDER", folder)
    database = Database.from_url(sqlite_url)

    assert fresh.usable_snapshot(database) is None
    commands.migrate(database, "upgrade", "head")  # replays

    assert database.status().at_head
    directions = {row["direction"] for row in _runs(database)}
    assert directions == {"upgrade"}


def test_a_target_below_head_replays(database_url: str) -> None:
    database = Database.from_url(database_url)
    second = load_history().revisions[1].id

    commands.migrate(database, "upgrade", second)

    assert database.status().current == second
    rows = _runs(database)
    assert [(row["revision"], row["direction"]) for row in rows] == [
        (revision.id, "upgrade") for revision in load_history().revisions[:2]
    ]


def test_a_fresh_install_records_one_row_per_revision(database_url: str) -> None:
    database = Database.from_url(database_url)

    commands.migrate(database, "upgrade", "head")

    rows = _runs(database)
    assert [row["revision"] for row in rows] == [r.id for r in load_history().revisions]
    assert {row["direction"] for row in rows} == {"fresh install"}
    assert all(row["success"] and len(row["file_hash"]) == 64 for row in rows)


def test_the_dry_run_of_an_empty_database_prints_the_snapshot(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    database = Database.from_url(database_url)

    commands.preview(database, "upgrade", "head")

    out = capsys.readouterr().out
    assert out.startswith("-- Fresh install of ")
    assert "CREATE TABLE" in out and "flow_run" in out
    assert f"INSERT INTO alembic_version VALUES ('{load_history().head}')" in out
    assert database.status().current is None


def _runs(database: Database) -> list[dict[str, object]]:
    from flowdb.database.journal import read_runs

    return read_runs(database, database.status())


def broken_snapshot(folder: Path, name: str, last: str) -> Path:
    """A copy of the snapshots whose ``name`` snapshot ends with the statement ``last``."""
    shutil.copytree(fresh.SNAPSHOT_FOLDER, folder)
    path = folder / f"{name}.sql"
    path.write_text(path.read_text(encoding="utf-8") + f"\n{last};\n", encoding="utf-8")
    return folder


def test_a_failed_fresh_install_leaves_the_database_empty_and_is_recorded(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.errors import FlowdbError
    from tests.dbtools import table_names

    name = Database.from_url(database_url).dialect.name
    folder = broken_snapshot(tmp_path / "snapshots", name, "CREATE TABLE flow (id INTEGER)")
    monkeypatch.setattr(fresh, "SNAPSHOT_FOLDER", folder)
    database = Database.from_url(database_url)

    with pytest.raises(FlowdbError):
        commands.migrate(database, "upgrade", "head")

    # flowdb's own tables only: the failure's record and the version of its shape.
    assert table_names(database_url) == {
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
        "flowdb_replica",
    }
    assert database.status().owner == "empty"
    failed = _runs(database)[-1]
    assert failed["direction"] == "fresh install" and failed["success"] is False
    assert "flow" in str(failed["error"])


SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
    "WHERE x < 500000000) SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(60)",
    "mariadb": "SELECT SLEEP(60)",
}
#: The install, with its snapshots from ``argv[1]``; it creates the file ``argv[2]`` when
#: it sends the slow last statement (the moment to kill it, without guessing from outside).
CHILD = """
import pathlib, sqlite3, sys
import sqlalchemy as sa
import flowdb.database.fresh as fresh
fresh.SNAPSHOT_FOLDER = pathlib.Path(sys.argv[1])
sending = pathlib.Path(sys.argv[2])

SLOW = ("WITH RECURSIVE", "SELECT pg_sleep(60)", "SELECT SLEEP(60)")

def mark(statement):
    if statement.lstrip().startswith(SLOW):
        sending.touch()

@sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _mark(conn, cursor, statement, *args):
    mark(statement)

connect = sqlite3.connect
def traced(*args, **kwargs):  # SQLite installs on sqlite3 itself, not SQLAlchemy
    connection = connect(*args, **kwargs)
    connection.set_trace_callback(mark)
    return connection
sqlite3.connect = traced

sys.argv = ["flowdb", "database", "upgrade", "-y"]
from flowdb.cli.root import main
main()
"""


def test_a_fresh_install_killed_part_way_leaves_the_database_empty_or_resumable(
    database_url: str, second_url: str, tmp_path: Path
) -> None:
    """Killed inside its last statement: empty where the install is one transaction;
    where DDL commits by itself, marked part way through, and completed by a rerun."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.dbtools import sqlite_path, table_names

    database = Database.from_url(database_url)
    name = database.dialect.name
    folder = broken_snapshot(tmp_path / "snapshots", name, SLOW[name])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=database_url, FLOWDB_HOME=str(tmp_path / "home"))
    sending = tmp_path / "sending-the-slow-statement"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(sending)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _installing(database_url, sending):
            assert child.poll() is None, "the install ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.2)  # well inside the slow last statement, every table created
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)

    status = database.status()
    assert status.current is None
    if not database.dialect.features.ddl_commits:
        assert table_names(database_url) <= {"flowdb_migration_run", "flowdb_bookkeeping_version"}
        path = sqlite_path(database_url)
        assert path is None or not path.with_name(path.name + "-journal").exists()
        return
    assert status.in_progress == ((load_history().head, FRESH_INSTALL_PHASE, 0),)
    assert status.describe_progress().startswith(load_history().head)
    commands.migrate(database, "upgrade", "head")  # the real snapshot completes it
    replayed = Database.from_url(second_url)
    commands.migrate(replayed, "upgrade", "head", use_snapshot=False)
    assert database.status().at_head and not database.status().in_progress
    difference = fresh.first_difference(fresh.catalogue(replayed), fresh.catalogue(database))
    assert difference is None, difference


def _installing(url: str, sending: Path) -> bool:
    """Whether a fresh install's slow last statement runs.

    The child says when it sends it; on a server the statement must also be seen running
    there. (SQLite was judged by its rollback journal, which a WAL file never has: the
    test waited out its 60 s deadline before every kill.)
    """
    from tests.dbtools import scalar, sqlite_path

    if not sending.exists():
        return False
    if sqlite_path(url) is not None:
        return True
    query = (
        "SELECT count(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(60)'"
        if url.startswith("mariadb")
        else "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
    )
    return bool(scalar(url, query))
