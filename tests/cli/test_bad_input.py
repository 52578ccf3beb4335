"""Bad input through the real CLI: one ``Error:`` line naming problem and fix, nothing written.

Every case runs ``flowdb`` (its ``main()``) without a terminal and checks that

* it exits non-zero with exactly one line on stderr, ``Error: ...``, holding the key
  words of the problem and of the fix, and no traceback anywhere;
* the database is exactly as before: the SHA-256 of a SQLite file's bytes (or its
  absence), or a PostgreSQL schema, row-count and revision fingerprint.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdb.database.history import VERSIONS_FOLDER, load_history
from tests.cli.helpers import (
    assert_cannot_write,
    assert_one_line_error,
    current_revision,
    drop_write_override,
    fingerprint,
    flowdb,
    ok,
    sqlite_file,
)
from tests.dbtools import set_revision

IDS = [revision.id for revision in load_history().revisions]
HEAD = IDS[-1]
UNKNOWN = "ffffffffffff"
SECRET = "s3cret"
#: Where nothing listens: connection refused at once.
REFUSED_URL = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/flowdb"
#: A name that never resolves (RFC 2606 reserves .invalid).
UNRESOLVABLE_URL = f"postgresql://postgres:{SECRET}@no-such-host.invalid:5432/flowdb"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """FLOWDB_HOME for the subprocess; tests check that bad input does not create it."""
    return tmp_path / "home"


@pytest.fixture
def at_third(database_url: str, home: Path) -> str:
    """``database_url`` upgraded three revisions."""
    ok(flowdb(database_url, "database", "upgrade", "-y", "-r", IDS[2], home=home))
    assert current_revision(database_url) == IDS[2]
    return database_url


@pytest.fixture
def from_the_future(database_url: str, home: Path) -> str:
    """``database_url`` at head, then stamped with a revision this flowdb does not know."""
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
    set_revision(database_url, UNKNOWN)
    return database_url


def check(url: str, home: Path, args: list[str], *words: str) -> str:
    """Run ``flowdb ARGS`` against ``url``: one error line with ``words``, database unchanged."""
    before = fingerprint(url)
    result = flowdb(url, *args, home=home)
    line = assert_one_line_error(result, *words)
    assert fingerprint(url) == before, f"{args} changed the database"
    return line


# --- revisions that do not exist or cannot be reached ---------------------------------

UNKNOWN_REVISIONS = [
    (["database", "upgrade", "-y", "-r", "deadbeef"], ("'deadbeef'", "not in", "history")),
    (["database", "upgrade", "-r", "deadbeef"], ("'deadbeef'", "not in", "history")),
    (["database", "upgrade", "--dry-run", "-r", "deadbeef"], ("'deadbeef'", "history")),
    (["database", "downgrade", "-y", "-r", "nope"], ("'nope'", "not in", "history")),
    (["database", "downgrade", "--dry-run", "-r", "nope"], ("'nope'", "history")),
    (["database", "stamp", "nope"], ("'nope'", "not in", "history")),
    (["database", "downgrade", "-y", "-r", "-50"], ("-50", "only 3 revision", "-r base")),
    (["database", "downgrade", "-y", "-r", "+1"], ("forward", "flowdb database upgrade")),
    (["database", "upgrade", "-y", "-r", "-1"], ("back", "flowdb database downgrade")),
    (["database", "upgrade", "-y", "-r", "+40"], ("+40", "head")),
    (["database", "downgrade", "-y", "-r", HEAD], (HEAD, "newer", "flowdb database upgrade")),
]


@pytest.mark.parametrize(("args", "words"), UNKNOWN_REVISIONS, ids=lambda v: " ".join(v))
def test_unreachable_revision(
    at_third: str, home: Path, args: list[str], words: tuple[str, ...]
) -> None:
    check(at_third, home, args, *words)
    assert current_revision(at_third) == IDS[2]


def test_a_revision_of_any_length_is_quoted_in_one_short_line(sqlite_url: str, home: Path) -> None:
    """A script's runaway argument (5,000 characters here) was quoted whole."""
    line = check(sqlite_url, home, ["database", "upgrade", "-y", "-r", "deadbeef" * 625])
    assert "'deadbeefdeadbeef" in line and "... (5,000 characters)" in line, line
    assert "not in flowdb's migration history" in line
    assert len(line) < 200, len(line)


@pytest.mark.parametrize("revision", ["-1", "-2"])
def test_downgrade_of_an_empty_database(database_url: str, home: Path, revision: str) -> None:
    check(
        database_url,
        home,
        ["database", "downgrade", "-y", "-r", revision],
        "only 0 revision",
        "empty",
        "nothing to downgrade",
    )


def test_downgrade_of_a_missing_sqlite_file_creates_nothing(sqlite_url: str, home: Path) -> None:
    check(sqlite_url, home, ["database", "downgrade", "-y"], "nothing to downgrade")
    assert list(sqlite_file(sqlite_url).parent.iterdir()) == [], "bad input left files behind"
    assert not home.exists()


# --- the database cannot be reached ----------------------------------------------------

UNREACHABLE_COMMANDS = [
    ["database", "upgrade", "-y"],
    ["database", "downgrade", "-y"],
    ["database", "upgrade", "--dry-run"],
    ["database", "current"],
    ["database", "history"],
    ["database", "check"],
    ["database", "stamp", "-y", "head"],
    ["database", "reset", "-y"],
]


@pytest.mark.parametrize("args", UNREACHABLE_COMMANDS, ids=lambda v: " ".join(v))
def test_nothing_listens_on_the_port(home: Path, args: list[str]) -> None:
    result = flowdb(REFUSED_URL, *args, home=home)

    words = ("Cannot connect", "127.0.0.1:1", "refused", "server is running")
    assert_one_line_error(result, *words, "FLOWDB_DATABASE_URL")
    assert SECRET not in result.stdout + result.stderr
    assert not home.exists()


@pytest.mark.parametrize("args", UNREACHABLE_COMMANDS[:4], ids=lambda v: " ".join(v))
def test_the_host_name_does_not_resolve(home: Path, args: list[str]) -> None:
    result = flowdb(UNRESOLVABLE_URL, *args, home=home)

    assert_one_line_error(result, "Cannot connect", "no-such-host.invalid", "host")
    assert SECRET not in result.stdout + result.stderr


def test_a_missing_postgresql_database_is_named(postgres_url: str, home: Path) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/flowdb_no_such_database"
    result = flowdb(missing, "database", "upgrade", "-y", home=home)

    assert_one_line_error(result, "Cannot connect", "flowdb_no_such_database", "does not exist")


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_a_nul_in_the_database_name_reaches_no_database(
    dialect: str, request: pytest.FixtureRequest, home: Path
) -> None:
    """libpq ended the name at the NUL and migrated the database named by what came before
    it; SQLite's path raised a traceback and MariaDB's handshake failed as a statement."""
    fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url", "sqlite": "sqlite_url"}[
        dialect
    ]
    url = request.getfixturevalue(fixture)
    cut_at_nul = url + "%00x"  # the real database's name, then a NUL and more
    before = fingerprint(url)
    result = flowdb(cut_at_nul, "database", "upgrade", "-y", home=home)

    words = ("NUL character (%00)", "in the database (name or file path)")
    assert_one_line_error(result, *words, "remove it from FLOWDB_DATABASE_URL")
    assert result.returncode == 2
    assert fingerprint(url) == before
    assert current_revision(url) is None


# --- read-only SQLite --------------------------------------------------------------------

WRITING_COMMANDS = [
    ["database", "upgrade", "-y"],
    ["database", "downgrade", "-y"],
    ["database", "stamp", "-y", "head"],
    ["database", "reset", "-y"],
]


@pytest.mark.parametrize("args", WRITING_COMMANDS, ids=lambda v: " ".join(v))
def test_sqlite_opened_read_only_by_its_url(sqlite_url: str, home: Path, args: list[str]) -> None:
    # SQLite's own read-only mode (a URI with mode=ro): the driver refuses every write,
    # whoever runs the test, which is the "attempt to write a readonly database" path.
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", IDS[2], home=home))
    read_only = f"sqlite:///file:{sqlite_file(sqlite_url)}?mode=ro&uri=true"

    check(read_only, home, args, "read-only", "write access")
    assert current_revision(sqlite_url) == IDS[2]


@pytest.fixture
def read_only_later(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths to make read-only in a test; their write bits come back afterwards for cleanup."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_sqlite_file_without_write_permission(
    tmp_path: Path, home: Path, read_only_later: list[Path]
) -> None:
    # Tests run as root, whom a 0o444 mode does not stop; the child drops the capability
    # that lets root ignore it (see drop_write_override), so the mode binds it.
    folder = tmp_path / "data"
    folder.mkdir()
    url = f"sqlite:///{folder / 'flowdb.db'}"
    ok(flowdb(url, "database", "upgrade", "-y", "-r", IDS[2], home=home))
    database = sqlite_file(url)
    database.chmod(0o444)
    read_only_later.append(database)
    before = fingerprint(url)

    result = flowdb(url, "database", "upgrade", "-y", home=home, preexec_fn=drop_write_override)

    assert_one_line_error(result, "read-only", str(database), "write access")
    assert fingerprint(url) == before
    assert current_revision(url) == IDS[2]


@pytest.mark.parametrize("existing", ["no database yet", "database and lock file exist"])
def test_sqlite_folder_without_write_permission(
    tmp_path: Path, home: Path, read_only_later: list[Path], existing: str
) -> None:
    # The folder is 0o555 and the child cannot override it (see drop_write_override).
    # With a database already there, its lock file exists and opens fine, so the first
    # write that fails is a new file beside it: the lock's holder file or the journal.
    folder = tmp_path / "data"
    folder.mkdir()
    url = f"sqlite:///{folder / 'flowdb.db'}"
    if existing != "no database yet":
        ok(flowdb(url, "database", "upgrade", "-y", "-r", IDS[2], home=home))
    folder.chmod(0o555)
    read_only_later.append(folder)
    assert_cannot_write(folder)
    before = fingerprint(url), sorted(p.name for p in folder.iterdir())

    result = flowdb(url, "database", "upgrade", "-y", home=home, preexec_fn=drop_write_override)

    assert_one_line_error(result, str(folder), "write access", "folder")
    assert (fingerprint(url), sorted(p.name for p in folder.iterdir())) == before


def test_sqlite_folder_that_is_a_file(tmp_path: Path, home: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'flowdb.db'}"

    for args in (["database", "upgrade", "-y"], ["database", "check"]):
        result = flowdb(url, *args, home=home)
        assert_one_line_error(result, str(blocker), "not a folder", "FLOWDB_DATABASE_URL")
    assert blocker.read_text() == "not a folder"


def test_sqlite_folder_that_does_not_exist_is_not_created(tmp_path: Path, home: Path) -> None:
    # Only the home folder is created on demand; a typo elsewhere must not grow folders.
    url = f"sqlite:///{tmp_path / 'typo' / 'flowdb.db'}"
    result = flowdb(url, "database", "upgrade", "-y", home=home)

    assert_one_line_error(result, str(tmp_path / "typo"), "does not exist", "create it")
    assert not (tmp_path / "typo").exists()


def test_a_file_that_is_not_a_sqlite_database(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    before = path.read_bytes()

    result = flowdb(f"sqlite:///{path}", "database", "upgrade", "-y", home=home)

    assert_one_line_error(result, str(path), "not a SQLite database", "FLOWDB_DATABASE_URL")
    assert path.read_bytes() == before


# --- a database migrated by a newer flowdb ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["database", "upgrade", "-y"],
        ["database", "downgrade", "-y"],
        ["database", "current"],
        ["database", "history"],
        ["database", "upgrade", "--dry-run"],
        ["database", "downgrade", "--dry-run"],
    ],
    ids=lambda v: " ".join(v),
)
def test_database_at_a_revision_this_flowdb_does_not_know(
    from_the_future: str, home: Path, args: list[str]
) -> None:
    check(from_the_future, home, args, UNKNOWN, "does not know", "newer flowdb")
    assert current_revision(from_the_future) == UNKNOWN


def test_current_still_shows_the_unknown_revision(from_the_future: str, home: Path) -> None:
    result = flowdb(from_the_future, "database", "current", home=home)

    assert result.returncode != 0
    assert f"Revision: {UNKNOWN}" in result.stdout
    assert "newer than this flowdb" in result.stdout


# --- URLs ----------------------------------------------------------------------------------

MALFORMED_URLS = [
    ("foo:bar", ("'foo:bar'", "malformed", "FLOWDB_DATABASE_URL", "sqlite:///")),
    ("mssql://x/y", ("'mssql'", "does not support", "sqlite://", "postgresql://")),
    ("postgresql://host", ("names no database", "add one", "/flowdb")),
    (f"postgresql://u:{SECRET}@127.0.0.1:1", ("names no database",)),
    (f"postgresql//u:{SECRET}@127.0.0.1:1/x", ("malformed", "FLOWDB_DATABASE_URL")),
    (f"mssql://u:{SECRET}@h/x", ("does not support",)),
    (f"postgresql://u:p@ss{SECRET}@127.0.0.1:1/x", ("'@'", "%40")),
    (f"postgresql://u@127.0.0.1:1/x?password={SECRET}", ("Cannot connect", "password=***")),
]


@pytest.mark.parametrize(("url", "words"), MALFORMED_URLS, ids=[u for u, _ in MALFORMED_URLS])
@pytest.mark.parametrize("command", [["upgrade", "-y"], ["current"]], ids=lambda v: v[0])
def test_unusable_url(home: Path, url: str, words: tuple[str, ...], command: list[str]) -> None:
    result = flowdb(url, "database", *command, home=home)

    assert_one_line_error(result, *words)
    assert SECRET not in result.stdout + result.stderr
    assert "p@ss" not in result.stdout + result.stderr
    assert not home.exists()


# --- revision messages and settings -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["-m", ""], ["-m", "   "], [], ["--autogenerate"]],
    ids=["empty", "blank", "missing", "autogenerate-missing"],
)
def test_revision_needs_a_message(sqlite_url: str, home: Path, args: list[str]) -> None:
    files_before = sorted(os.listdir(VERSIONS_FOLDER))
    try:
        result = flowdb(sqlite_url, "database", "revision", *args, home=home)
        assert_one_line_error(result, "revision message is empty", "-m")
    finally:
        for name in set(os.listdir(VERSIONS_FOLDER)) - set(files_before):
            (VERSIONS_FOLDER / name).unlink()  # never leave a stray revision in the source tree
    assert sorted(os.listdir(VERSIONS_FOLDER)) == files_before
    assert not sqlite_file(sqlite_url).exists()


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FLOWDB_MIGRATION_LOCK_TIMEOUT", "abc", ("'abc'", "valid number")),
        ("FLOWDB_MIGRATION_LOCK_TIMEOUT", "-1", ("'-1'", "greater than or equal to 0")),
        ("FLOWDB_MIGRATE_ON_START", "maybe", ("'maybe'", "boolean")),
    ],
)
def test_malformed_setting(
    sqlite_url: str, home: Path, name: str, value: str, words: tuple[str, ...]
) -> None:
    for command in (["upgrade", "-y"], ["current"]):
        result = flowdb(sqlite_url, "database", *command, home=home, env={name: value})
        assert_one_line_error(result, name, "invalid", "fix or unset", *words)
    assert not sqlite_file(sqlite_url).exists()
    assert not home.exists()
