"""The reference migration API: its contract, dry-runs, stamp, revision and thread safety.

Every test runs against real databases (a SQLite file and a PostgreSQL database).
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database import alembic_commands, fresh
from flowdb.database import history as history_module
from flowdb.database.alembic_commands import (
    ALEMBIC_LOCK,
    alembic_config,
    alembic_downgrade,
    alembic_revision,
    alembic_stamp,
    alembic_upgrade,
    with_alembic_lock,
)
from flowdb.database.history import VERSIONS_FOLDER, load_history
from flowdb.database.schema_check import schema_differences
from flowdb.database.target import Database
from flowdb.errors import (
    DowngradeBelowBaseError,
    FlowdbError,
    InvalidRevisionMessageError,
    UnknownRevisionError,
)
from flowdb.settings import get_settings
from tests.dbtools import (
    drop_mariadb_database,
    drop_postgres_database,
    nullable_columns,
    revision_of,
    run_in_threads_at_once,
    schema_snapshot,
    sqlite_path,
    sync_engine,
    table_names,
)

EMPTY = inspect.Parameter.empty
POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD

#: "-- Running upgrade a -> b" comments Alembic writes before each migration's SQL.
_STEP = re.compile(r"^-- Running (upgrade|downgrade) (\S*) -> (\S+)$", re.MULTILINE)


# --- helpers ---------------------------------------------------------------------------


def steps(sql: str) -> list[tuple[str, str, str]]:
    """The ``(direction, from, to)`` of each migration in a dry-run's output."""
    return [(m[1], m[2], m[3]) for m in _STEP.finditer(sql)]


def upgrade_steps(revision_ids: list[str]) -> list[tuple[str, str, str]]:
    """The steps an upgrade through ``revision_ids`` (in order) prints."""
    history = load_history()
    return [
        ("upgrade", r.down_revision or "", r.id) for r in history.revisions if r.id in revision_ids
    ]


def database_of(url: str) -> Database:
    return Database.from_url(url)


#: Schema objects other than tables (and their indexes and constraints), per dialect.
OTHER_OBJECTS = {
    # flowdb's history creates the enum type state_type.
    "postgresql": "SELECT 'type ' || typname FROM pg_type WHERE typtype = 'e'",
    # An enum is a column type here: views, sequences and routines are the other objects.
    "mariadb": (
        "SELECT CONCAT(LOWER(table_type), ' ', table_name) FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_type NOT IN ('BASE TABLE', 'SYSTEM VERSIONED') "
        "UNION ALL SELECT CONCAT(LOWER(routine_type), ' ', routine_name) "
        "FROM information_schema.routines WHERE routine_schema = DATABASE()"
    ),
    "sqlite": "SELECT type || ' ' || name FROM sqlite_master WHERE type IN ('view', 'trigger')",
}


def other_objects(url: str) -> set[str]:
    """The database's schema objects that are not tables: ``{"type state_type", ...}``."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text(OTHER_OBJECTS[engine.dialect.name])
            return set(connection.execute(query).scalars())
    finally:
        engine.dispose()


def version_rows(url: str) -> list[str]:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            )
    finally:
        engine.dispose()


def sqlite_bytes(url: str) -> bytes | None:
    """The SQLite file's content (``None`` for PostgreSQL): a dry-run must not change a byte."""
    path = sqlite_path(url)
    return path.read_bytes() if path is not None else None


def assert_database_is_empty(url: str) -> None:
    """A fresh database is still untouched: no SQLite file, or no table, type or view."""
    path = sqlite_path(url)
    if path is not None:
        assert not path.exists()
    else:
        assert table_names(url) == set()
        assert other_objects(url) == set()


def make_unreadable(url: str) -> None:
    """Make any attempt to read the database fail: garbage in the SQLite file, or no database."""
    path = sqlite_path(url)
    if path is not None:
        path.write_bytes(b"this is not a SQLite database " * 100)
    elif url.startswith("mariadb"):
        drop_mariadb_database(url)
    else:
        drop_postgres_database(url)


def run_in_thread(target: Callable[[], None], timeout: float) -> None:
    """Run ``target`` in a daemon thread; fail (instead of hanging) if it does not finish."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: deadlock?"
    if errors:
        raise errors[0]


# --- the API contract ------------------------------------------------------------------


def parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_public_signatures_match_the_reference_api() -> None:
    assert parameters(alembic_upgrade) == [
        ("revision", POSITIONAL_OR_KEYWORD, "head"),
        ("dry_run", POSITIONAL_OR_KEYWORD, False),
    ]
    assert parameters(alembic_downgrade) == [
        ("revision", POSITIONAL_OR_KEYWORD, "-1"),
        ("dry_run", POSITIONAL_OR_KEYWORD, False),
    ]
    assert parameters(alembic_revision) == [
        ("message", POSITIONAL_OR_KEYWORD, None),
        ("autogenerate", POSITIONAL_OR_KEYWORD, False),
        ("kwargs", VAR_KEYWORD, EMPTY),
    ]
    assert parameters(alembic_stamp) == [("revision", POSITIONAL_OR_KEYWORD, EMPTY)]
    assert parameters(alembic_config) == []
    assert parameters(with_alembic_lock) == [("fn", POSITIONAL_OR_KEYWORD, EMPTY)]


def test_alembic_config_points_at_flowdb_migrations_and_the_configured_database(
    configured: str,
) -> None:
    config = alembic_config()
    location = Path(config.get_main_option("script_location") or "")
    assert location == history_module.MIGRATIONS_FOLDER == alembic_commands.MIGRATIONS_FOLDER
    assert (location / "env.py").is_file()
    assert config.attributes["database"].url == database_of(configured).url


def test_the_commands_are_wrapped_by_the_alembic_lock() -> None:
    for command in (alembic_upgrade, alembic_downgrade, alembic_revision, alembic_stamp):
        wrapped = inspect.unwrap(command)
        assert wrapped is not command
        assert wrapped.__name__ == command.__name__


def test_with_alembic_lock_keeps_the_wrapped_function_identity() -> None:
    def sample(value: int, *, twice: bool = False) -> int:
        """Return value, possibly doubled."""
        return value * 2 if twice else value

    wrapped = with_alembic_lock(sample)

    assert wrapped.__name__ == "sample"
    assert wrapped.__qualname__ == sample.__qualname__
    assert wrapped.__doc__ == "Return value, possibly doubled."
    assert wrapped.__wrapped__ is sample  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(sample)
    assert wrapped(3) == 3
    assert wrapped(3, twice=True) == 6


def test_with_alembic_lock_is_reentrant_within_a_thread() -> None:
    @with_alembic_lock
    def inner() -> str:
        return "inner"

    @with_alembic_lock
    def outer() -> str:
        return inner() + "+outer"

    @with_alembic_lock
    def countdown(n: int) -> int:
        return 0 if n == 0 else 1 + countdown(n - 1)

    results: list[tuple[str, int]] = []
    run_in_thread(lambda: results.append((outer(), countdown(10))), timeout=10)
    assert results == [("inner+outer", 10)]


def test_with_alembic_lock_excludes_other_threads_while_held() -> None:
    taken_by_other_thread: list[bool] = []

    def try_to_take() -> None:
        acquired = ALEMBIC_LOCK.acquire(blocking=False)
        if acquired:
            ALEMBIC_LOCK.release()
        taken_by_other_thread.append(acquired)

    @with_alembic_lock
    def holder() -> None:
        run_in_thread(try_to_take, timeout=10)

    holder()  # while held: another thread cannot take the lock
    run_in_thread(try_to_take, timeout=10)  # once released: it can
    assert taken_by_other_thread == [False, True]


def test_nested_real_commands_in_one_thread_do_not_deadlock(configured: str) -> None:
    history = load_history()

    @with_alembic_lock
    def upgrade_then_step_back() -> None:
        alembic_upgrade()
        alembic_downgrade()
        alembic_stamp("head")

    run_in_thread(upgrade_then_step_back, timeout=120)
    # Stamped head on a schema one revision short: stamp records without migrating.
    assert revision_of(configured) == history.head
    # (the head, a contract, declared log.flow_run_id NOT NULL; its downgrade undid that)
    assert "flow_run_id" in nullable_columns(configured, "log")


def test_importing_the_commands_does_not_import_alembic() -> None:
    code = (
        "import sys, flowdb.database.alembic_commands as c\n"
        "print('alembic' in sys.modules)\n"
        "c.alembic_config()\n"
        "print('alembic' in sys.modules)\n"  # the check can see an import
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


# --- dry-runs --------------------------------------------------------------------------


def test_upgrade_dry_run_on_a_fresh_database_prints_sql_and_writes_nothing(
    configured: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = load_history()
    files_before = sorted(tmp_path.iterdir())

    alembic_upgrade(dry_run=True)

    sql = capsys.readouterr().out
    # An empty database going to head: the fresh install's SQL, in one transaction.
    assert sql.startswith(f"-- Fresh install of {history.head}")
    assert "CREATE TABLE IF NOT EXISTS alembic_version" in sql
    assert re.search(r'CREATE TABLE (IF NOT EXISTS )?"?flow_run"? \(', sql)
    assert re.search(r'CREATE TABLE (IF NOT EXISTS )?"?deployment_schedule"? \(', sql)
    assert f"INSERT INTO alembic_version VALUES ('{history.head}')" in sql
    # The replayed history stays one range away.
    alembic_upgrade("base:head", dry_run=True)
    replay = capsys.readouterr().out
    assert steps(replay) == upgrade_steps([r.id for r in history.revisions])
    assert f"version_num='{history.head}'" in replay
    assert_database_is_empty(configured)
    assert sorted(tmp_path.iterdir()) == files_before  # no file, lock file or folder
    assert not get_settings().resolved_home.exists()


def test_upgrade_dry_run_creates_no_folder_for_the_default_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = get_settings().resolved_home  # FLOWDB_HOME, a folder that does not exist yet
    assert not home.exists()

    alembic_upgrade(dry_run=True)

    assert re.search(r'CREATE TABLE "?flow_run"? \(', capsys.readouterr().out)
    assert not home.exists()


def test_downgrade_dry_run_at_head_previews_only_the_last_revision(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = load_history()
    last = history.revisions[-1]
    alembic_upgrade()
    schema_before, bytes_before = schema_snapshot(configured), sqlite_bytes(configured)
    capsys.readouterr()

    alembic_downgrade(dry_run=True)

    sql = capsys.readouterr().out
    assert steps(sql) == [("downgrade", last.id, str(last.down_revision))]
    # The head's downgrade (a contract's) restores the trigger its expand keeps.
    assert re.search(
        r'CREATE (OR REPLACE )?(FUNCTION|TRIGGER)( IF NOT EXISTS)? "?flowdb_a1f5c7e9b3d2_fill', sql
    )
    assert f"version_num='{last.down_revision}'" in sql
    assert revision_of(configured) == history.head
    assert schema_snapshot(configured) == schema_before
    assert sqlite_bytes(configured) == bytes_before


def test_downgrade_dry_run_on_a_fresh_database_refuses_to_go_below_base(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DowngradeBelowBaseError):
        alembic_downgrade(dry_run=True)
    assert capsys.readouterr().out == ""
    assert_database_is_empty(configured)


def test_upgrade_dry_run_from_a_middle_revision_prints_only_the_pending_ones(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = load_history()
    middle = history.revisions[len(history.revisions) // 2]
    alembic_upgrade(middle.id)
    schema_before, bytes_before = schema_snapshot(configured), sqlite_bytes(configured)
    capsys.readouterr()

    alembic_upgrade(dry_run=True)

    sql = capsys.readouterr().out
    pending = [r.id for r in history.pending(middle.id)]
    assert len(pending) >= 2
    assert steps(sql) == upgrade_steps(pending)
    assert "CREATE TABLE alembic_version" not in sql
    assert "CREATE TABLE flow (" not in sql
    assert revision_of(configured) == middle.id
    assert schema_snapshot(configured) == schema_before
    assert sqlite_bytes(configured) == bytes_before


def test_upgrade_dry_run_of_an_explicit_range_needs_no_database(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = load_history()
    make_unreadable(configured)
    with pytest.raises(FlowdbError):  # without a range, the database must be read
        alembic_upgrade(dry_run=True)
    capsys.readouterr()

    alembic_upgrade("base:head", dry_run=True)

    sql = capsys.readouterr().out
    assert steps(sql) == upgrade_steps([r.id for r in history.revisions])
    assert "CREATE TABLE flow_run (" in sql
    if configured.startswith("postgresql"):
        assert "CREATE TYPE state_type AS ENUM" in sql
    if configured.startswith("mariadb"):
        assert "state_type ENUM('SCHEDULED'," in sql


# --- stamp -----------------------------------------------------------------------------


def test_stamp_head_writes_only_the_version_and_stamp_base_clears_it(configured: str) -> None:
    history = load_history()

    alembic_stamp("head")

    # The version, and the record of the stamp in flowdb's record of runs.
    assert table_names(configured) == {
        "alembic_version",
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
        "flowdb_replica",
    }
    assert version_rows(configured) == [history.head]
    assert other_objects(configured) == set()

    middle = history.revisions[3].id
    alembic_stamp(middle[:6])  # a unique prefix names a revision too
    assert version_rows(configured) == [middle]

    alembic_stamp("base")

    assert version_rows(configured) == []
    assert revision_of(configured) is None
    assert table_names(configured) == {
        "alembic_version",
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
        "flowdb_replica",
    }


def test_stamp_with_an_unknown_revision_raises_and_changes_nothing(configured: str) -> None:
    history = load_history()
    with pytest.raises(UnknownRevisionError):
        alembic_stamp("deadbeef0000")
    assert_database_is_empty(configured)

    middle = history.revisions[2].id
    alembic_upgrade(middle)
    before = schema_snapshot(configured)
    for unknown in ("deadbeef0000", "", "heads:base"):
        with pytest.raises(UnknownRevisionError):
            alembic_stamp(unknown)
    assert revision_of(configured) == middle
    assert schema_snapshot(configured) == before


def test_stamp_takes_a_list_or_tuple_of_revisions_as_alembic_does(configured: str) -> None:
    history = load_history()
    middle = history.revisions[3].id

    alembic_stamp(["head"])
    assert version_rows(configured) == [history.head]

    alembic_stamp((middle[:6],))
    assert version_rows(configured) == [middle]

    # Items naming the same revision are one revision: the history has a single branch.
    alembic_stamp(["head", "heads", str(history.head)])
    assert version_rows(configured) == [history.head]

    alembic_stamp(("base",))
    assert version_rows(configured) == []


@pytest.mark.parametrize(
    "revisions",
    [
        [],
        (),
        ["head", "base"],
        ["head", "deadbeef0000"],
        ("base", 7),
    ],
)
def test_stamp_refuses_a_list_that_cannot_apply_and_changes_nothing(
    configured: str, revisions: list[Any] | tuple[Any, ...]
) -> None:
    history = load_history()
    middle = history.revisions[2].id
    alembic_upgrade(middle)
    before = schema_snapshot(configured)

    with pytest.raises(UnknownRevisionError) as raised:
        alembic_stamp(revisions)

    assert revision_of(configured) == middle
    assert schema_snapshot(configured) == before
    assert "\n" not in str(raised.value)


def test_stamp_of_two_revisions_names_both_and_the_single_branch(configured: str) -> None:
    history = load_history()
    first, middle = history.revisions[0].id, history.revisions[3].id

    with pytest.raises(UnknownRevisionError, match="single branch") as raised:
        alembic_stamp([first, middle[:8]])

    assert first in str(raised.value) and middle in str(raised.value)
    assert_database_is_empty(configured)


# --- concurrency -----------------------------------------------------------------------


def test_twenty_threads_upgrading_one_fresh_database_at_once(configured: str) -> None:
    errors = run_in_threads_at_once(alembic_upgrade, 20)

    assert errors == []
    assert version_rows(configured) == [load_history().head]
    assert schema_differences(database_of(configured)) == []


def test_twenty_threads_previewing_at_once_print_whole_previews(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dry-runs take no migration lock; only the Alembic lock keeps their output apart."""
    count = 20
    errors = run_in_threads_at_once(lambda: alembic_upgrade(dry_run=True), count)

    assert errors == []
    out = capsys.readouterr().out
    one_preview = out[: len(out) // count]
    database = database_of(configured)
    snapshot = fresh.usable_snapshot(database)
    assert snapshot is not None
    assert one_preview == fresh.render(database, snapshot)
    assert out == one_preview * count
    assert_database_is_empty(configured)


# --- revision --------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_revision_with_an_empty_message_is_refused(message: str) -> None:
    files_before = sorted(VERSIONS_FOLDER.iterdir())
    with pytest.raises(InvalidRevisionMessageError):
        alembic_revision(message=message)
    assert sorted(VERSIONS_FOLDER.iterdir()) == files_before


@pytest.fixture
def migrations_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the migrations folder that ``alembic_config()`` points at for this test."""
    copy = tmp_path / "migrations"
    shutil.copytree(
        history_module.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(history_module, "MIGRATIONS_FOLDER", copy)
    return copy


def written_revision(folder: Path, rev_id: str) -> Path:
    matches = list((folder / "versions").glob(f"*_{rev_id}_*.py"))
    assert len(matches) == 1, matches
    return matches[0]


def function_body(source: str, name: str) -> str:
    match = re.search(rf"^def {name}\(\) -> None:\n(.*?)(?=^\S|\Z)", source, re.S | re.M)
    assert match is not None, f"no {name}() in the revision file"
    return match[1]


def test_revision_writes_a_new_head_after_the_current_one(migrations_copy: Path) -> None:
    real_files = sorted(VERSIONS_FOLDER.iterdir())
    old_head = load_history().head

    alembic_revision(message="add flow_run priority", rev_id="0123456789ab")

    path = written_revision(migrations_copy, "0123456789ab")
    assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_0123456789ab_add_flow_run_priority\.py", path.name)
    new_history = load_history(migrations_copy / "versions")
    assert new_history.head == "0123456789ab"
    assert new_history.revisions[-1].down_revision == old_head
    assert new_history.revisions[-1].title == "add flow_run priority"
    assert function_body(path.read_text(), "upgrade").strip() == "pass"
    assert sorted(VERSIONS_FOLDER.iterdir()) == real_files  # the shipped history is untouched
    assert load_history(VERSIONS_FOLDER).head == old_head


def test_autogenerate_at_head_finds_nothing_and_sees_a_missing_index(
    configured: str, migrations_copy: Path
) -> None:
    alembic_upgrade()

    alembic_revision(message="nothing to do", autogenerate=True, rev_id="aaaaaaaaaaaa")

    empty = written_revision(migrations_copy, "aaaaaaaaaaaa")
    assert "op." not in function_body(empty.read_text(), "upgrade")
    assert "op." not in function_body(empty.read_text(), "downgrade")

    # Control: the comparison does see a difference once the database lacks an index.
    empty.unlink()
    engine = sync_engine(configured)
    try:
        with engine.begin() as connection:
            # Each dialect's DROP INDEX (MariaDB's names the table); the index must exist.
            flow_run = sa.Table("flow_run", sa.MetaData(), autoload_with=connection)
            index = {i.name: i for i in flow_run.indexes}["ix_flow_run__expected_start_time"]
            index.drop(connection)
    finally:
        engine.dispose()

    alembic_revision(message="restore index", autogenerate=True, rev_id="bbbbbbbbbbbb")

    upgrade = function_body(
        written_revision(migrations_copy, "bbbbbbbbbbbb").read_text(), "upgrade"
    )
    assert "create_index" in upgrade
    assert "ix_flow_run__expected_start_time" in upgrade
