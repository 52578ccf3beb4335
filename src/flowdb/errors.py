"""The one family of errors flowdb raises for conditions a user can fix.

Every error carries a complete one-line message that names the problem and the fix.
The CLI prints ``str(error)`` and exits with ``exit_code``; anything that is not a
``FlowdbError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class FlowdbError(Exception):
    """Base class: a user-facing failure with a one-line message."""

    exit_code: int = 1


class ConfigurationError(FlowdbError):
    """A setting (URL, home folder, timeout) is malformed or unusable."""

    exit_code = 2


class DatabaseUnreachableError(FlowdbError):
    """The database server cannot be reached or refused the connection."""


class DatabaseReadOnlyError(FlowdbError):
    """The database (or the folder holding a SQLite file) cannot be written."""


class UnknownRevisionError(FlowdbError):
    """A revision named by the user does not exist in flowdb's migration history."""

    exit_code = 2


class DatabaseNewerThanCodeError(FlowdbError):
    """The database is stamped with a revision this flowdb does not know."""


class DowngradeBelowBaseError(FlowdbError):
    """A downgrade asked to go further back than the first revision."""

    exit_code = 2


class InvalidRevisionMessageError(FlowdbError):
    """A new revision was asked for with an empty message."""

    exit_code = 2


class MigrationLockTimeoutError(FlowdbError):
    """Another process held the migration lock for longer than the wait timeout."""


class ConfirmationRequiredError(FlowdbError):
    """A destructive command ran without a terminal to ask and without ``--yes``."""

    exit_code = 2


class MigrationFailedError(FlowdbError):
    """A migration raised while running; the database stays at the last revision that committed."""


class SchemaNotAtHeadError(FlowdbError):
    """The database schema is older than this flowdb and migrating on start is off."""


def one_line_message(error: BaseException) -> str:
    """``error``'s message on one line, with any password that slipped into it hidden.

    Messages are written as one line, but some quote text from drivers or Alembic;
    this is the last guard before a terminal or a log.
    """
    from flowdb.database.urls import redact_message

    text = " ".join(str(error).split())
    return redact_message(text) or type(error).__name__
