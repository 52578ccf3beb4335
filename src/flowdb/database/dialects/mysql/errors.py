"""MariaDB's and MySQL's errors in one line each, recognised by their error numbers."""

from __future__ import annotations

from typing import Any

from flowdb.errors import (
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    DiskFullError,
    FlowdbError,
)

#: Connections the server refuses for a reason of its own, with what to do about each.
#: They used to read as a statement that failed and was rolled back.
_REFUSED = {
    1040: "no connection is left (max_connections); close idle sessions or raise "
    "max_connections, then run the command again.",
    1226: "this user reached one of its limits (max_user_connections or an hourly one); "
    "close its idle sessions or raise the limit (ALTER USER), then run the command again.",
    1129: "it blocked this host after many failed connections; run 'mariadb-admin "
    "flush-hosts' on the server, then run the command again.",
    1130: "it lets no user connect from this host; grant the user access from this host "
    "or connect from an allowed one.",
    1043: "the handshake failed; check that FLOWDB_DATABASE_URL names a MariaDB or MySQL "
    "server's port.",
    2026: "TLS could not be set up: the server offers none, or the URL's ssl_* parameters "
    "do not fit it; fix them in FLOWDB_DATABASE_URL.",
}
#: A table listed and then read is gone (1146), or was changed after the snapshot (1412).
VANISHED = frozenset({1146, 1412})


def translate_error(exc: BaseException, text: str, where: str) -> FlowdbError | None:
    """Connection failures, unknown databases, permissions, timeouts, full disks.

    Matched on the server's (or the client library's, 2000-2999) error number, which
    every error of PyMySQL and aiomysql carries; ``text`` is only quoted.
    """
    code = error_code(exc)
    if code in (1045, 1044, 1049, 1698, 2003, 2005, 2006, 2013):
        reason = {
            1045: "access denied: wrong user or password",
            1698: "access denied: wrong user or password",
            1044: "access denied to the database for this user",
            1049: "unknown database",
        }.get(code or 0, "cannot reach the server")
        return DatabaseUnreachableError(
            f"Cannot connect to the database at {where} ({reason}); check that the "
            "server is running and that FLOWDB_DATABASE_URL names the right host, port, "
            "user, password and database."
        )
    if code in _REFUSED:
        return DatabaseUnreachableError(
            f"The server of {where} turned flowdb away ({text}); {_REFUSED[code]}"
        )
    if code in (1205, 3572):
        return DatabaseBusyError(
            f"A table of {where} stayed locked by another session ({text}); find it in "
            "SHOW PROCESSLIST, let it finish, and run the command again."
        )
    if code in (1290, 1792):
        return DatabaseReadOnlyError(
            f"The database at {where} is read-only ({text}); connect to the primary server."
        )
    if code in (1142, 1227, 1143):
        return DatabaseReadOnlyError(
            f"The database user may not do this on {where} ({text}); connect as a user "
            "that may read, create and alter flowdb's tables."
        )
    if code in (1021, 1114, 3):
        return DiskFullError(
            f"The server of {where} ran out of disk space ({text}); free space on the "
            "server and run the command again."
        )
    return None


def is_lock_timeout(exc: BaseException) -> bool:
    """Error 1205 (lock wait timeout) or 3572 (NOWAIT)."""
    return error_code(exc) in (1205, 3572)


def error_code(exc: BaseException) -> int | None:
    """The server's (or PyMySQL's) numeric error code of a driver error, if any."""
    source: Any = getattr(exc, "orig", None) or exc
    args = getattr(source, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
