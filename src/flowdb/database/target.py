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

from flowdb import settings as settings_module
from flowdb.database import dialects
from flowdb.database.dialects.base import Dialect
from flowdb.database.failures import translated_errors
from flowdb.database.history import History, load_history
from flowdb.database.lockinfo import LockHolder
from flowdb.database.locking import Waiter, migration_lock
from flowdb.database.rereading import reread
from flowdb.database.status import SchemaStatus, status_from_catalog
from flowdb.database.urls import DatabaseUrl
from flowdb.settings import Settings

if TYPE_CHECKING:
    # SQLAlchemy only for annotations: building a Database never imports it.
    from sqlalchemy.engine import Engine


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
        settings = settings if settings is not None else settings_module.get_settings()
        return cls.from_url(settings.resolved_database_url(), settings)

    @classmethod
    def from_url(cls, raw: str, settings: Settings | None = None) -> Database:
        """The database at ``raw``, with ``settings`` (default: read from the environment)."""
        # Through the modules, so that a test counting the calls sees them.
        settings = settings if settings is not None else settings_module.get_settings()
        url = dialects.parse_database_url(raw)
        dialect = dialects.dialect_class(url.backend)
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
        return migration_lock(self, command)

    def engine(self, application_name: str = "flowdb") -> Engine:
        """An unpooled sync engine with flowdb's transaction handling; dispose it after use."""
        return self.dialect.create_sync_engine(application_name)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver, OS and Alembic errors raised in the block into one-line errors."""
        with translated_errors(self):
            yield
