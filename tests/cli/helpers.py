"""Running ``flowdb`` as operators do (without a terminal) and comparing databases.

``flowdb`` runs the command in this process, through the same ``main()`` edge as the
installed ``flowdb`` (so exit codes and one-line messages are the same) and returns
what a subprocess would have returned; ``flowdb_process`` (or ``flowdb`` with
``preexec_fn``) runs it in a real subprocess, for what only a process shows: signals,
start-up imports, concurrency, kills, capabilities.

Used by ``test_database_commands.py``, ``test_bad_input.py`` and others.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from tests.dbtools import sync_engine

#: Linux capability numbers (linux/capability.h) and prctl's PR_CAPBSET_DROP.
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_PR_CAPBSET_DROP = 24

#: SQLite's companions of a database file; a write leaves one of them behind or changes it.
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


def flowdb(
    url: str | None,
    *args: str,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    migrations: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``flowdb ARGS`` with stdin not a terminal, and return what it did.

    In this process (about fifty times faster than a subprocess) unless ``preexec_fn``
    asks for a child process; the arguments mean what they mean for ``flowdb_process``.
    """
    if preexec_fn is not None:
        return flowdb_process(
            url, *args, home=home, env=env, cwd=cwd, preexec_fn=preexec_fn, migrations=migrations
        )
    from tests.cli.in_process import run_main

    return run_main(_environment(url, home, env), list(args), cwd=cwd, migrations=migrations)


def _environment(url: str | None, home: Path | None, env: dict[str, str] | None) -> dict[str, str]:
    """The caller's environment without its ``FLOWDB_*`` variables, plus the given ones."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    if home is not None:
        environment["FLOWDB_HOME"] = str(home)
    if url is not None:
        environment["FLOWDB_DATABASE_URL"] = url
    environment.update(env or {})
    return environment


def flowdb_process(
    url: str | None,
    *args: str,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    migrations: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowdb ARGS`` in a subprocess without a terminal; return what it did.

    Only the ``FLOWDB_*`` variables given here reach the child: ``FLOWDB_DATABASE_URL``
    (unless ``url`` is ``None``), ``FLOWDB_HOME`` (unless ``home`` is ``None``) and ``env``.
    ``migrations`` points the child at a copy of the migrations folder (a test's own
    history), as the tests of the Python API do with ``history.MIGRATIONS_FOLDER``.
    """
    environment = _environment(url, home, env)
    command = [sys.executable, "-m", "flowdb", *args]
    if migrations is not None:
        boot = (
            "import sys, pathlib\n"
            "import flowdb.database.history as history\n"
            f"history.MIGRATIONS_FOLDER = pathlib.Path({str(migrations)!r})\n"
            "from flowdb.cli.root import main\n"
            "main()\n"
        )
        command = [sys.executable, "-c", boot, *args]
    return subprocess.run(
        command,
        env=environment,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=preexec_fn,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert that a command succeeded without a traceback, and pass its result on."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert a failed run that explained itself in one ``Error:`` line holding ``words``.

    Returns that line.
    """
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"expected a failure, got exit 0\n{output}"
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("Error: "), line
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"
    return line


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return url.startswith("sqlite")


def sqlite_file(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL (also ``sqlite:///file:PATH?...&uri=true``)."""
    from tests.dbtools import sqlite_path

    path = sqlite_path(url)
    assert path is not None, url
    return path


def fingerprint(url: str) -> str:
    """Something that changes whenever anything is written to the database at ``url``.

    SQLite: the SHA-256 of the file's bytes (or ``absent``), plus which of its journal
    files exist. PostgreSQL: tables, columns, constraints, indexes and enum types of the
    ``public`` schema, every table's row count and the ``alembic_version`` rows.
    """
    if is_sqlite(url):
        path = sqlite_file(url)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
        sides = [s for s in SQLITE_SIDE_FILES if path.with_name(path.name + s).exists()]
        wal = path.with_name(path.name + "-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            # A read-only connection to a WAL file leaves an empty log and its index
            # behind (it may not remove them): nothing in them, nothing changed.
            sides = [s for s in sides if s not in ("-wal", "-shm")]
        return f"{digest} {sides}"
    if sa.make_url(url).get_backend_name() in ("mysql", "mariadb"):
        return _mysql_fingerprint(url)
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:

            def rows(sql: str) -> list[tuple[object, ...]]:
                return [tuple(row) for row in connection.execute(sa.text(sql))]

            tables = [
                str(row[0])
                for row in rows(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' ORDER BY 1"
                )
            ]
            counts = {
                t: connection.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar()
                for t in tables
            }
            version = (
                rows("SELECT version_num FROM alembic_version ORDER BY 1")
                if "alembic_version" in tables
                else None
            )
            return repr(
                (
                    rows(
                        "SELECT table_name, column_name, data_type, is_nullable, "
                        "column_default FROM information_schema.columns "
                        "WHERE table_schema = 'public' ORDER BY 1, 2"
                    ),
                    rows(
                        "SELECT table_name, constraint_name, constraint_type "
                        "FROM information_schema.table_constraints "
                        "WHERE table_schema = 'public' ORDER BY 1, 2"
                    ),
                    rows(
                        "SELECT indexname, indexdef FROM pg_indexes "
                        "WHERE schemaname = 'public' ORDER BY 1"
                    ),
                    rows(
                        "SELECT t.typname, e.enumlabel FROM pg_type t "
                        "JOIN pg_enum e ON e.enumtypid = t.oid ORDER BY 1, e.enumsortorder"
                    ),
                    counts,
                    version,
                )
            )
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision in ``alembic_version``, read with a plain engine (``None``: empty)."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            values = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            found = values.scalars().all()
    finally:
        engine.dispose()
    assert len(found) <= 1, found
    return str(found[0]) if found else None


def drop_write_override() -> None:
    """``preexec_fn``: make file permissions bind the child even when it runs as root.

    Tests run as root, and root writes anywhere through ``CAP_DAC_OVERRIDE``, so
    ``chmod`` alone proves nothing. Dropping that capability (and
    ``CAP_DAC_READ_SEARCH``) from the child's bounding set before ``exec`` leaves it
    root, so it still reads the root-owned interpreter and venv, but without the
    capabilities that ignore permission bits: a 0o555 folder or 0o444 file owned by
    root is then as read-only to it as to any user. A non-root user needs nothing.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"prctl(PR_CAPBSET_DROP): {os.strerror(code)}")


def assert_cannot_write(folder: Path) -> None:
    """Check that a child run with ``drop_write_override`` really cannot write in ``folder``.

    Guards the read-only tests against passing for the wrong reason.
    """
    probe = folder / "probe"
    result = subprocess.run(
        [sys.executable, "-c", f"open({str(probe)!r}, 'w')"],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=drop_write_override,
    )
    assert result.returncode != 0 and "PermissionError" in result.stderr, (
        f"a child process could still write in {folder}; this environment cannot "
        f"make a folder read-only (errno {errno.EACCES} expected): {result.stderr}"
    )
    assert not probe.exists()


def _mysql_fingerprint(url: str) -> str:
    """MariaDB/MySQL: the reflected schema, every table's row count, the default charset."""
    from tests.dbtools import schema_snapshot

    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            counts = {
                t: connection.execute(sa.text(f"SELECT count(*) FROM `{t}`")).scalar()
                for t in tables
            }
            charset = connection.execute(
                sa.text(
                    "SELECT default_character_set_name FROM information_schema.schemata "
                    "WHERE schema_name = DATABASE()"
                )
            ).scalar()
    finally:
        engine.dispose()
    return repr((schema_snapshot(url), counts, charset))
