"""Engines for migrations and one-off commands, and the translation of driver errors.

Migrations run on a sync engine with connections that flowdb controls:

* SQLite: Python's sqlite3 module does not put DDL in a transaction on its own, so a
  migration killed half-way would leave half a schema. We take over transaction
  control (``isolation_level = None``) and emit ``BEGIN IMMEDIATE`` ourselves, which
  also takes SQLite's write lock at the start of each migration. Foreign keys stay
  off while migrating: batch mode copies tables, and a DROP of the old copy would
  otherwise cascade deletes into child tables.
* PostgreSQL: psycopg 3, one transaction per migration (PostgreSQL has transactional
  DDL), a connect timeout so an unreachable server fails fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flowdb.database.urls import DatabaseUrl
from flowdb.errors import (
    ConfigurationError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    FlowdbError,
    MigrationFailedError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_SECONDS = 60.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10


def create_sync_engine(database: DatabaseUrl, *, application_name: str = "flowdb") -> Engine:
    """Create a sync engine with flowdb's transaction handling for ``database``.

    Connections are not pooled: migration commands are short-lived and must not keep
    a connection (and on SQLite a file handle) open after they finish.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    if database.is_sqlite:
        prepare_sqlite_folder(database)
        engine = create_engine(
            database.sync_url,
            poolclass=NullPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )

        @event.listens_for(engine, "connect")
        def _take_over_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    from flowdb.settings import get_settings

    # Migrations get their own statement timeout (none by default), whatever the role
    # or database sets for the API: a cancelled index build or data migration only
    # wastes the work done so far, since each migration rolls back as a whole.
    timeout_ms = round(get_settings().migration_statement_timeout * 1000)
    return create_engine(
        database.sync_url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
            "application_name": application_name[:63],
            "options": f"-c statement_timeout={timeout_ms}",
        },
    )


def prepare_sqlite_folder(database: DatabaseUrl) -> None:
    """Make sure the folder of a SQLite file exists (creating the default home) and is usable."""
    path = database.sqlite_path
    if path is None:
        return
    from flowdb.settings import get_settings

    folder = path.parent
    if not folder.exists():
        if folder == get_settings().resolved_home:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            raise ConfigurationError(
                f"The folder {folder} of the SQLite database does not exist; create it or "
                "point FLOWDB_DATABASE_URL at an existing folder."
            )
    if not folder.is_dir():
        raise ConfigurationError(
            f"{folder} is not a folder, so the SQLite database {path.name} cannot live there; "
            "point FLOWDB_DATABASE_URL at a file inside a folder."
        )


def translate_database_error(exc: BaseException, database: DatabaseUrl) -> FlowdbError | None:
    """Turn a driver error into a one-line ``FlowdbError``; ``None`` if it is no known case."""
    import errno

    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc) else ""
    lowered = text.lower()
    where = database.redacted()
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        # Files flowdb writes itself beside a SQLite database (lock and holder files),
        # or a folder it creates, in a place this user may not write to.
        target = exc.filename or database.sqlite_path or where
        return DatabaseReadOnlyError(
            f"Cannot write {target} ({exc.strerror or text}); give this user write access "
            "to the database's folder, or point FLOWDB_DATABASE_URL somewhere writable."
        )
    if database.is_sqlite:
        if "readonly database" in lowered or "read-only" in lowered:
            return DatabaseReadOnlyError(
                f"The SQLite database {database.sqlite_path or where} is read-only; give this "
                "user write access to the file and its folder, or use another FLOWDB_DATABASE_URL."
            )
        if "unable to open database file" in lowered:
            return DatabaseReadOnlyError(
                f"The SQLite database {database.sqlite_path or where} cannot be opened for "
                "writing; check that its folder exists and is writable by this user."
            )
        if "file is not a database" in lowered:
            return ConfigurationError(
                f"{database.sqlite_path or where} is not a SQLite database; point "
                "FLOWDB_DATABASE_URL at a flowdb database file, or at a path where one may "
                "be created."
            )
        return None
    connection_markers = (
        "connection refused",
        "could not connect",
        "connection failed",
        "could not translate host name",
        "name or service not known",
        "timeout expired",
        "connection timed out",
        "no route to host",
        "password authentication failed",
        "no password supplied",
        "server closed the connection",
    )
    missing_database = 'database "' in lowered and "does not exist" in lowered
    if missing_database or any(marker in lowered for marker in connection_markers):
        return DatabaseUnreachableError(
            f"Cannot connect to the database at {where} ({text}); check that the server is "
            "running and that FLOWDB_DATABASE_URL names the right host, port, user and database."
        )
    if "statement timeout" in lowered:
        return MigrationFailedError(
            f"A statement on {where} ran longer than FLOWDB_MIGRATION_STATEMENT_TIMEOUT "
            "allows and was cancelled; the migration it belonged to was rolled back. Raise "
            "the timeout (0 means no limit) and run the command again."
        )
    if "read-only transaction" in lowered or "permission denied" in lowered:
        return DatabaseReadOnlyError(
            f"The database at {where} refused a write ({text}); connect as a user that may "
            "create and alter tables."
        )
    return None


@contextmanager
def translated_errors(database: DatabaseUrl) -> Iterator[None]:
    """Turn driver errors raised in the block into one-line ``FlowdbError``s.

    Known conditions (unreachable, read-only) get their own error; any other database
    error becomes ``MigrationFailedError`` with the driver's first line. Errors that
    are not database errors are bugs and keep their traceback.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except FlowdbError:
        raise
    except Exception as exc:
        translated = translate_database_error(exc, database)
        if translated is not None:
            raise translated from exc
        if isinstance(exc, DBAPIError):
            first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise MigrationFailedError(
                f"The database rejected a statement and it was rolled back ({first_line}); "
                "the database stays at the last revision that completed "
                "(see 'flowdb database current')."
            ) from exc
        raise
