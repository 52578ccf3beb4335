"""The one family of errors flowdb raises for conditions a user can fix, and their exit codes.

Every error carries a complete one-line message that names the problem and the fix.
The CLI prints ``str(error)`` and exits with ``exit_code``: one code per kind of
failure, so scripts can tell "cannot connect" from "the schema differs". The table in
README.md lists them; a test keeps the two in step. Anything that is not a
``FlowdbError`` (and not an OS, driver or Alembic error the edge translates) is a bug
and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum

from flowdb.redaction import redact_message


class ExitCode(IntEnum):
    """Process exit codes of the ``flowdb`` command, one per kind of outcome."""

    OK = 0
    NO = 1  # the command ran and the answer is no: schema differs, wait timed out, declined
    USAGE = 2  # bad option, revision, URL or setting; confirmation needed
    UNREACHABLE = 3  # cannot connect, or the database does not exist
    NOT_WRITABLE = 4  # permission denied, read-only file or transaction
    DISK_FULL = 5  # no space left on the device
    BUSY = 6  # the migration lock or the database stayed locked past the timeout
    REFUSED = 7  # the database's state forbids it: newer, foreign, clashing, not at head, data
    MIGRATION_FAILED = 8  # a statement was rejected; the migration was rolled back
    CORRUPT = 9  # a damaged database file or a broken migration history
    HISTORY_CHANGED = 10  # a revision file differs from the one applied (or from the manifest)
    UNSUPPORTED = 11  # the server is too old, or the database's character set is not utf8mb4
    LOCK_LOST = 12  # the migration lock's server session ended; the command stopped between steps
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM


class FlowdbError(Exception):
    """Base class: a user-facing failure with a one-line message."""

    exit_code: int = ExitCode.NO


class UsageError(FlowdbError):
    """The command was called wrongly: an unknown option, a missing or malformed argument."""

    exit_code = ExitCode.USAGE


class ConfigurationError(FlowdbError):
    """A setting (URL, home folder, timeout) is malformed or unusable."""

    exit_code = ExitCode.USAGE


class UnknownRevisionError(FlowdbError):
    """A revision named by the user does not exist in flowdb's migration history."""

    exit_code = ExitCode.USAGE


class DowngradeBelowBaseError(FlowdbError):
    """A downgrade asked to go further back than the first revision."""

    exit_code = ExitCode.USAGE


class InvalidRevisionMessageError(FlowdbError):
    """A new revision was asked for with an empty message."""

    exit_code = ExitCode.USAGE


class ConfirmationRequiredError(FlowdbError):
    """A destructive command ran without a terminal to ask and without ``--yes``."""

    exit_code = ExitCode.USAGE


class AddressUnavailableError(FlowdbError):
    """The server cannot listen on the asked host and port (in use, or not this host's)."""

    exit_code = ExitCode.USAGE


class DatabaseUnreachableError(FlowdbError):
    """The database server cannot be reached or refused the connection."""

    exit_code = ExitCode.UNREACHABLE


class DatabaseReadOnlyError(FlowdbError):
    """The database (or a file or folder flowdb must write) cannot be written."""

    exit_code = ExitCode.NOT_WRITABLE


class DiskFullError(FlowdbError):
    """The device holding the database (or a file flowdb writes) has no space left."""

    exit_code = ExitCode.DISK_FULL


class MigrationLockTimeoutError(FlowdbError):
    """Another process held the migration lock for longer than the wait timeout."""

    exit_code = ExitCode.BUSY


class MigrationLockLostError(FlowdbError):
    """The migration lock was lost while a command held it (its server session ended).

    The command stopped before its next step (another command may hold the lock now);
    the database stays at the last step that completed.
    """

    exit_code = ExitCode.LOCK_LOST


class MigrationBlockedError(FlowdbError):
    """A migration could not take its table locks within its retries; it failed closed."""

    exit_code = ExitCode.BUSY


class DatabaseBusyError(FlowdbError):
    """Another connection kept the database locked for longer than the wait timeout."""

    exit_code = ExitCode.BUSY


class DatabaseNewerThanCodeError(FlowdbError):
    """The database is stamped with a revision this flowdb does not know."""

    exit_code = ExitCode.REFUSED


class ForeignDatabaseError(FlowdbError):
    """The database belongs to another application, or holds tables with flowdb's names."""

    exit_code = ExitCode.REFUSED


class MigrationInProgressError(FlowdbError):
    """A migration is part way through; only the direction that started it may go on."""

    exit_code = ExitCode.REFUSED


class UnconvertibleDataError(FlowdbError):
    """Rows a data migration cannot convert; found before it changed anything."""

    exit_code = ExitCode.REFUSED


class SchemaNotAtHeadError(FlowdbError):
    """The database schema is older than this flowdb and migrating on start is off."""

    exit_code = ExitCode.REFUSED


class MigrationFailedError(FlowdbError):
    """A migration raised while running; the database stays at the last revision that committed."""

    exit_code = ExitCode.MIGRATION_FAILED


class CorruptDatabaseError(FlowdbError):
    """The database file is damaged (not a database, or malformed)."""

    exit_code = ExitCode.CORRUPT


class BrokenHistoryError(FlowdbError):
    """The migration files do not form one linear history (cycle, duplicate, fork, bad file)."""

    exit_code = ExitCode.CORRUPT


class ConflictError(FlowdbError):
    """A request conflicts with what the database holds (the API answers 409)."""

    exit_code = ExitCode.REFUSED


class StateTransitionError(ConflictError):
    """A run was asked to move to a state its current state may not be followed by."""


class InvalidReferenceError(FlowdbError):
    """Ids in a request that each name a row but do not belong together (the API answers 422).

    ``loc`` says where in the request the offending id is, as validation errors do.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class ChangedRevisionError(FlowdbError):
    """A revision applied to the database has a different file now than when it was applied."""

    exit_code = ExitCode.HISTORY_CHANGED


class SchemaWaitTimeoutError(FlowdbError):
    """The database did not reach head within the time ``wait`` was given."""

    exit_code = ExitCode.NO


class UnsupportedServerError(FlowdbError):
    """The database server is older than flowdb supports, or set up in a way it cannot use."""

    exit_code = ExitCode.UNSUPPORTED


class Interrupted(BaseException):
    """Raised by the CLI's SIGTERM handler so that cleanup runs as it does for Ctrl-C."""


def one_line_message(error: BaseException) -> str:
    """``error``'s message on one line, with any password that slipped into it hidden.

    Messages are written as one line, but some quote text from drivers or Alembic;
    this is the last guard before a terminal or a log.
    """
    text = " ".join(str(error).split())
    return redact_message(text) or type(error).__name__
