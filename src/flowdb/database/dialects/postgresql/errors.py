"""PostgreSQL's errors in one line each, recognised by SQLSTATE whatever the server's language.

The SQLSTATE (``sqlstate``) stays the same whatever ``lc_messages`` the server writes
its messages in; only errors that carry none (raised by libpq before a server answered,
or by PgBouncer) are recognised otherwise, each saying why.
"""

from __future__ import annotations

from typing import Any

from flowdb.errors import (
    ConfigurationError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    DiskFullError,
    FlowdbError,
    MigrationFailedError,
)

#: SQLSTATEs (PostgreSQL's errcodes.txt) flowdb recognises, whatever ``lc_messages`` is.
UNDEFINED_TABLE = "42P01"  # undefined_table
_QUERY_CANCELED = "57014"  # query_canceled: statement_timeout ran out
LOCK_NOT_AVAILABLE = "55P03"  # lock_not_available: lock_timeout ran out
_INVALID_SCHEMA_NAME = "3F000"  # invalid_schema_name: no schema of search_path exists
_READ_ONLY_TRANSACTION = "25006"  # read_only_sql_transaction: a standby
_INSUFFICIENT_PRIVILEGE = "42501"  # insufficient_privilege: permission denied, not owner
_DISK_FULL = "53100"  # disk_full: no space left, could not extend a file
#: Classes and codes that mean the server cannot be reached or the session is gone:
#: connection_exception (08), invalid_authorization_specification (28), and
_UNREACHABLE_CLASSES = frozenset({"08", "28"})
#: invalid_catalog_name (3D000, no such database), admin_shutdown (57P01),
#: crash_shutdown (57P02), cannot_connect_now (57P03), database_dropped (57P04),
#: idle_session_timeout (57P05), too_many_connections (53300).
_UNREACHABLE = frozenset({"3D000", "57P01", "57P02", "57P03", "57P04", "57P05", "53300"})


def translate_error(exc: BaseException, text: str, where: str) -> FlowdbError | None:
    """Connection failures, permissions, timeouts and a full disk, each in one line.

    Matched on the error's SQLSTATE (``sqlstate``), which stays the same whatever
    language the server writes its messages in (``lc_messages``); ``text`` is only
    quoted. Only errors that carry no SQLSTATE fall back to other signals.
    """
    code = sqlstate(exc)
    if code is None and _libpq_option_error(text):
        return ConfigurationError(
            f"The database URL {where} has a parameter PostgreSQL does not know ({text}); "
            "remove it from FLOWDB_DATABASE_URL."
        )
    if code is None and _no_sqlstate_connection_error(exc):
        # PgBouncer's refusals reach the client with no SQLSTATE (libpq keeps it), and
        # PgBouncer writes its messages in English only: its text is the only signal.
        if "unsupported startup parameter" in text.lower():
            return ConfigurationError(
                f"A pooler in front of {where} refused a startup parameter ({text}); "
                "behind PgBouncer in transaction pooling set "
                "FLOWDB_DATABASE_POOL_MODE=transaction (or auto, which detects it); in "
                "session pooling, add the parameter to its ignore_startup_parameters."
            )
        return _unreachable(where, text)
    if code is None:
        return None
    if code[:2] in _UNREACHABLE_CLASSES or code in _UNREACHABLE:
        return _unreachable(where, text)
    if code == _QUERY_CANCELED:
        return MigrationFailedError(
            f"A statement on {where} ran longer than FLOWDB_MIGRATION_STATEMENT_TIMEOUT "
            "allows and was cancelled; the migration it belonged to was rolled back. Raise "
            "the timeout (0 means no limit) and run the command again."
        )
    if code == LOCK_NOT_AVAILABLE:
        return DatabaseBusyError(
            f"A table of {where} stayed locked by another session ({text}); the step was "
            "rolled back. Find the session in pg_stat_activity, let it finish, and run the "
            "command again."
        )
    if code == _INVALID_SCHEMA_NAME:
        return ConfigurationError(
            f"No schema of the search_path of {where} exists ({text}); create the schema "
            "(CREATE SCHEMA ...) or fix the options parameter of FLOWDB_DATABASE_URL."
        )
    if code == _READ_ONLY_TRANSACTION:
        return DatabaseReadOnlyError(
            f"The database at {where} is read-only ({text}); connect to the primary server."
        )
    if code == _INSUFFICIENT_PRIVILEGE:
        return DatabaseReadOnlyError(
            f"The database user may not do this on {where} ({text}); connect as a user "
            "that may read, create and alter flowdb's tables."
        )
    if code == _DISK_FULL:
        return DiskFullError(
            f"The PostgreSQL server of {where} ran out of disk space ({text}); the step "
            "was rolled back. Free space on the server and run the command again."
        )
    return None


def server_timeout_message(exc: BaseException, seconds: float) -> str | None:
    """A ``statement_timeout`` on the API's engine (57014): FLOWDB_SERVER_QUERY_TIMEOUT."""
    if sqlstate(exc) != _QUERY_CANCELED:
        return None
    return (
        f"The query ran longer than FLOWDB_SERVER_QUERY_TIMEOUT "
        f"({seconds:g} s) allows and was cancelled; try again, "
        "or raise that setting (0 means no limit)."
    )


def is_lock_timeout(exc: BaseException) -> bool:
    """SQLSTATE 55P03 (lock_not_available): ``lock_timeout`` ran out."""
    return sqlstate(exc) == LOCK_NOT_AVAILABLE


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL driver error (SQLAlchemy wraps it in ``orig``), if any.

    psycopg 3 (``Error.sqlstate``, its ``diag``), asyncpg and SQLAlchemy's asyncpg
    adapter (``sqlstate``), psycopg2 (``pgcode``). Errors raised before the server
    answered (a refused connection) have none.
    """
    source: Any = getattr(exc, "orig", None) or exc
    code = getattr(source, "sqlstate", None)
    if code is None:
        code = getattr(getattr(source, "diag", None), "sqlstate", None)
    if code is None:
        code = getattr(source, "pgcode", None)
    return str(code) if code else None


def _no_sqlstate_connection_error(exc: BaseException) -> bool:
    """A driver's ``OperationalError`` without SQLSTATE: the connection failed or broke.

    psycopg reports a failed connect (refused, unknown host, timeout, a refused password
    or database: libpq keeps the server's SQLSTATE of a failed start to itself) and a
    connection lost mid-session this way.
    """
    source: Any = getattr(exc, "orig", None) or exc
    return any(klass.__name__ == "OperationalError" for klass in type(source).__mro__)


def _libpq_option_error(text: str) -> bool:
    """libpq refusing a URL parameter (an unknown option, a bad ``sslmode``) at connect.

    libpq raises these before it talks to any server, with no SQLSTATE and no error
    class of their own (``ProgrammingError``, ``OperationalError``): its client-side
    text is the only signal.
    """
    lowered = text.lower()
    return "invalid connection option" in lowered or "invalid sslmode" in lowered


def _unreachable(where: str, text: str) -> DatabaseUnreachableError:
    """The one line for a server that cannot be reached, or refuses the user or database."""
    return DatabaseUnreachableError(
        f"Cannot connect to the database at {where} ({text}); check that the server is "
        "running and that FLOWDB_DATABASE_URL names the right host, port, user and "
        "database."
    )
