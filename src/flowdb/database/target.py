"""The ``Database`` value: one database, the settings it was opened with, and its dialect.

Built once at each entry point (a CLI command, the server's start-up, ``ensure_schema``,
a reference API call, the bench) and handed down; nothing below an entry point reads
the environment or parses the URL again. It offers what the commands need: where the
database stands (``status``), its migration lock (``lock``), engines, and the
translation of driver errors into one-line ``FlowdbError``s (``errors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from flowdb.database.dialects.base import Dialect
    from flowdb.database.history import History
    from flowdb.database.locking import LockHolder
    from flowdb.database.status import SchemaStatus
    from flowdb.database.urls import DatabaseUrl
    from flowdb.settings import Settings


@dataclass(frozen=True, repr=False)
class Database:
    """A database flowdb works on, with everything needed to work on it."""

    url: DatabaseUrl
    settings: Settings
    dialect: Dialect
    history: History

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Database:
        """The configured database (``FLOWDB_DATABASE_URL``, or the default SQLite file)."""
        from flowdb.settings import get_settings

        settings = settings if settings is not None else get_settings()
        return cls.from_url(settings.resolved_database_url(), settings)

    @classmethod
    def from_url(cls, raw: str, settings: Settings | None = None) -> Database:
        """The database at ``raw``, with ``settings`` (default: read from the environment)."""
        from flowdb.database.dialects import dialect_class
        from flowdb.database.history import load_history
        from flowdb.database.urls import parse_database_url
        from flowdb.settings import get_settings

        settings = settings if settings is not None else get_settings()
        url = parse_database_url(raw)
        dialect = dialect_class(url.backend)
        assert dialect is not None  # parse_database_url accepts registered backends only
        return cls(
            url=url, settings=settings, dialect=dialect(url, settings), history=load_history()
        )

    def __repr__(self) -> str:
        return f"Database({self.url.redacted()!r})"

    def describe(self) -> str:
        """``the database at LOCATION``, for messages (never with a password)."""
        return self.dialect.describe()

    def location(self) -> str:
        """Where the database is: a file, or a URL without its password."""
        return self.dialect.location()

    def status(self) -> SchemaStatus:
        """Where the database stands; reads, never writes, never blocks past the timeout.

        A read that a running migration overtakes (a listed table dropped before it was
        read) starts again (``rereading``), so it never fails because of the migration.
        """
        from flowdb.database.locking import Waiter
        from flowdb.database.rereading import reread
        from flowdb.database.status import status_from_catalog

        waiter = Waiter(self, what="the database")
        with self.errors():
            catalog = reread(self, lambda: self.dialect.read_catalog(waiter))
        return status_from_catalog(catalog, self.history)

    def migration_running(self) -> LockHolder | None:
        """Who is migrating this database now, if anyone; never waits, never writes."""
        with self.errors():
            return self.dialect.migration_running()

    def columns(self) -> dict[str, frozenset[str]]:
        """Each table's column names, read from the system catalog (no table locks).

        For readiness during a migration: the server asks whether the tables and columns
        its models use are all there.
        """
        import sqlalchemy as sa

        from flowdb.database.rereading import reread

        def read() -> dict[tuple[str | None, str], list[Any]]:
            engine = self.engine("flowdb-status")
            try:
                with engine.connect() as connection:
                    return dict(sa.inspect(connection).get_multi_columns())
            finally:
                engine.dispose()

        with self.errors():
            found = reread(self, read, what="its columns")
        return {
            table: frozenset(column["name"] for column in columns)
            for (_schema, table), columns in found.items()
        }

    def lock(self, command: str) -> AbstractContextManager[None]:
        """The cross-process migration lock, held for the block (re-entrant per thread)."""
        from flowdb.database.locking import migration_lock

        return migration_lock(self, command)

    def engine(self, application_name: str = "flowdb") -> Engine:
        """An unpooled sync engine with flowdb's transaction handling; dispose it after use."""
        return self.dialect.create_sync_engine(application_name)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver, OS and Alembic errors raised in the block into one-line errors."""
        from flowdb.database.failures import translated_errors

        with translated_errors(self):
            yield
