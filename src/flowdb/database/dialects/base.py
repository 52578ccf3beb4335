"""What every dialect provides: the interface the rest of flowdb programs against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.database.locking import LockHolder, Waiter
    from flowdb.database.urls import DatabaseUrl
    from flowdb.errors import FlowdbError
    from flowdb.settings import Settings

#: The execution option of a connection that only reads: the dialect may begin its
#: transactions without taking a write lock (SQLite: deferred, so a WAL reader never
#: waits for the writer). Set it with ``connection.execution_options(**{READS_ONLY: True})``.
READS_ONLY = "flowdb_reads_only"


@dataclass(frozen=True)
class Catalog:
    """What a database holds, read without writing: its version rows and its tables.

    ``versions`` is ``None`` when there is no version table at all, ``[]`` when the
    table exists but is empty (a database downgraded to base). ``in_progress`` lists
    migrations that are part way through: ``(revision, phase, rows done)``.
    """

    versions: list[str] | None
    tables: frozenset[str]
    in_progress: tuple[tuple[str, str, int], ...] = ()
    #: The version of flowdb's own tables (``bookkeeping``) where the dialect reads it
    #: with the rest (SQLite); ``None``: not read, or no version row.
    bookkeeping: int | None = None

    @classmethod
    def read_rows(cls, connection: Connection, tables: frozenset[str]) -> Catalog:
        """The catalog of a database whose ``tables`` were listed on ``connection``.

        Reads flowdb's progress rows and the version rows from those of the two tables
        that exist (SQLAlchemy dialects; SQLite reads its file with ``sqlite3``).
        """
        import sqlalchemy as sa

        from flowdb.database.status import PROGRESS_TABLE, VERSION_TABLE

        in_progress: tuple[tuple[str, str, int], ...] = ()
        if PROGRESS_TABLE in tables:
            query = sa.text(f"SELECT revision, phase, rows_done FROM {PROGRESS_TABLE}")
            in_progress = tuple((r, p, int(n)) for r, p, n in connection.execute(query))
        if VERSION_TABLE not in tables:
            return cls(versions=None, tables=tables, in_progress=in_progress)
        rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
        return cls(versions=list(rows.scalars()), tables=tables, in_progress=in_progress)


class Dialect(ABC):
    """A database dialect: how flowdb connects to, locks, reads and clears one kind of database.

    An instance belongs to one ``Database`` (a URL and the settings it was built with).
    """

    #: The backend name in URLs (``sqlite``, ``postgresql``).
    name: ClassVar[str]
    #: How people call it, for messages.
    label: ClassVar[str]
    #: Drivers accepted after ``+`` in a URL (``""`` is the bare scheme).
    drivers: ClassVar[frozenset[str]]
    #: The driver migrations and one-off commands run on.
    sync_driver: ClassVar[str]
    #: The driver the API server runs on.
    async_driver: ClassVar[str]
    #: Whether ALTER TABLE needs Alembic's batch mode (table copies).
    render_as_batch: ClassVar[bool] = False
    #: Whether enum types are objects of their own that migrations create and drop.
    native_enums: ClassVar[bool] = False
    #: Whether indexes can be built without blocking writes (outside a transaction).
    concurrent_indexes: ClassVar[bool] = False
    #: Whether constraints can be added unchecked and validated later without a strong lock.
    deferred_validation: ClassVar[bool] = False
    #: Whether timestamps keep their time zone (else flowdb stores UTC without one).
    stores_time_zones: ClassVar[bool] = True
    #: Whether each DDL statement commits by itself (MySQL), so migrations must be rerunnable
    #: statement by statement, and ALTER needs a column's full type (no Alembic renames).
    ddl_commits: ClassVar[bool] = False
    #: Whether the server keeps a separate engine for reads (SQLite: plain BEGIN for reads).
    separate_read_engine: ClassVar[bool] = False

    def __init__(self, url: DatabaseUrl, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        #: The connection whose server session holds the migration lock, while this
        #: dialect holds it there (``None``: not held, or a lock no session can lose).
        self.lock_session: Connection | None = None

    @classmethod  # noqa: B027  (an optional hook)
    def validate_url(cls, url: DatabaseUrl, shown: str) -> None:
        """Raise ``ConfigurationError`` for a URL of this dialect that cannot work."""

    # --- identity -----------------------------------------------------------------------

    def describe(self) -> str:
        """How messages name this database: ``the database at LOCATION``."""
        return f"the database at {self.location()}"

    def location(self) -> str:
        """Where the database is, for people: a URL without its password, or a file."""
        return self.url.redacted()

    @property
    def lock_identity(self) -> str:
        """What identifies this database for the in-process re-entrancy of the lock."""
        return self.url.redacted()

    def exists(self) -> bool:
        """Whether the database exists already (a server's database always does)."""
        return True

    def check_migratable(self) -> None:  # noqa: B027  (optional hook)
        """Raise a ``FlowdbError`` when migrations cannot be run on this database at all."""

    # --- engines ------------------------------------------------------------------------

    @property
    def sync_url(self) -> URL:
        """The URL on the sync driver migrations run on."""
        return self.url.url.set(drivername=self.sync_driver)

    @property
    def async_url(self) -> URL:
        """The URL on the async driver the API server runs on."""
        return self.url.url.set(drivername=self.async_driver)

    @abstractmethod
    def create_sync_engine(self, application_name: str) -> Engine:
        """An unpooled sync engine whose transactions hold DDL atomically."""

    @abstractmethod
    def create_async_engine(self, *, write: bool) -> AsyncEngine:
        """The server's async engine (for writes, or for reads where they differ)."""

    # --- reading without writing ----------------------------------------------------------

    @abstractmethod
    def read_catalog(self, waiter: Waiter) -> Catalog:
        """The version rows and table names; never creates or changes anything.

        Waits for a database that another connection holds locked, through ``waiter``,
        which reports the holder and gives up at the lock timeout. Reads the rows in one
        snapshot where the dialect has one; a table that a migration dropped after it was
        listed raises what ``table_vanished`` recognises, and the caller reads again
        (``Database.status``, through ``rereading``).
        """

    def table_vanished(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a table listed moments ago is gone or changed (``rereading``).

        A migration may drop or rebuild a table between a reader listing it and reading
        it; the read then starts again. SQLAlchemy's reflection says so with
        ``NoSuchTableError`` on every dialect; each dialect adds its driver's errors.
        """
        import sys

        # Not imported yet means not raised by it: SQLite's reads use sqlite3 alone.
        errors: Any = sys.modules.get("sqlalchemy.exc")
        return errors is not None and isinstance(exc, errors.NoSuchTableError)

    # --- the migration lock ---------------------------------------------------------------

    @abstractmethod
    def migration_lock(self, command: str, waiter: Waiter) -> AbstractContextManager[None]:
        """Hold this database's cross-process migration lock for the block."""

    @abstractmethod
    def migration_running(self) -> LockHolder | None:
        """Who holds this database's migration lock now, if anyone (a quick look, no wait)."""

    # --- fencing: a migration that lost its lock stops (ARCHITECTURE.md, "Fencing") --------

    def fence(self, engine: Engine) -> None:
        """Fence every transaction begun on ``engine`` (a migration's) by the migration lock.

        As each transaction begins it takes the dialect's fence (``take_fence``), then
        checks that the lock session still holds the lock (``check_lock``): a command
        that lost its lock stops before its transaction runs anything. Nothing happens
        without a lock session (SQLite's file lock is lost only with its process).
        """
        if self.lock_session is None:
            return
        from sqlalchemy import event

        def begin(connection: Connection) -> None:
            dbapi_connection = connection.connection.dbapi_connection
            self.take_fence(dbapi_connection)
            self.check_lock(dbapi_connection)

        event.listen(engine, "begin", begin)

    def take_fence(self, dbapi_connection: Any) -> None:  # noqa: B027  (optional hook)
        """Take the fence on a migration connection whose transaction is beginning.

        A dialect whose lock lives on a server session makes the fence something a new
        holder waits for (``wait_for_fence``) before it reads the database, so that a
        step of a holder that lost its lock can never overlap the new holder's work.
        """

    def lock_still_held(self) -> bool:
        """Whether the lock session is alive and still holds the migration lock."""
        return True

    def check_lock(
        self, dbapi_connection: Any, *, rolled_back: bool = False, where: str | None = None
    ) -> None:
        """Raise ``MigrationLockLostError`` when this command's migration lock is gone.

        Called inside the fence, so the database read for the message (``where``,
        unless given) is one no other command is changing. ``rolled_back`` says the
        check stopped a step before its commit.
        """
        if self.lock_session is None or self.lock_still_held():
            return
        from flowdb.errors import MigrationLockLostError

        position = where if where is not None else self.position_on(dbapi_connection)
        stopped = (
            "rolled back the step it was about to commit"
            if rolled_back
            else "stopped before its next step"
        )
        raise MigrationLockLostError(
            f"The migration lock of {self.describe()} was lost while this command held it "
            f"(its server session ended: killed, or its connection dropped); the command "
            f"{stopped}, and the database stays at {position}. Another command may hold "
            "the lock now: check with 'flowdb database current' and run the command again."
        )

    def position_on(self, dbapi_connection: Any) -> str:
        """Where the database stands as ``dbapi_connection`` sees it: revision, part-way step.

        For messages only: any failure to read says so rather than guessing.
        """
        from flowdb.database.status import PROGRESS_TABLE, VERSION_TABLE

        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                f"{self.schema_function} AND table_name IN ('{VERSION_TABLE}', "
                f"'{PROGRESS_TABLE}')"
            )
            tables = {str(row[0]) for row in cursor.fetchall()}
            versions: list[str] = []
            if VERSION_TABLE in tables:
                cursor.execute(f"SELECT version_num FROM {VERSION_TABLE}")
                versions = [str(row[0]) for row in cursor.fetchall()]
            part_way: list[str] = []
            if PROGRESS_TABLE in tables:
                cursor.execute(f"SELECT revision, phase FROM {PROGRESS_TABLE}")
                part_way = [f"{row[0]} (phase {row[1]})" for row in cursor.fetchall()]
        except Exception:
            return "an unknown revision (see 'flowdb database current')"
        finally:
            cursor.close()
        where = ", ".join(versions) or "base"
        if part_way:
            where += ", with " + ", ".join(part_way) + " part way through"
        return where

    #: SQL naming the schema (PostgreSQL) or database (MySQL) flowdb's tables live in.
    schema_function: ClassVar[str] = "current_schema()"

    # --- maintenance ------------------------------------------------------------------------

    @abstractmethod
    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """SQL that drops ``tables`` (children first) and ``enum_types`` if they exist."""

    @abstractmethod
    def clear_statements(self, tables: list[str]) -> list[str]:
        """SQL that deletes every row of ``tables`` (children first), keeping the schema."""

    def backup_file(self) -> Path | None:
        """The file flowdb copies before a change (``database.backup``); ``None``: no copies.

        Only a file flowdb can copy consistently by itself has one (SQLite's); servers
        are backed up with their own dump tools (``dump_command``).
        """
        return None

    def dump_command(self) -> str | None:
        """The command that dumps this database, for a downgrade plan (never a password)."""
        return None

    def count_rows(self, connection: Connection, table: str, column: str | None = None) -> int:
        """Rows of ``table`` (with a non-null ``column`` when given); for loss reports."""
        import sqlalchemy as sa

        where = f' WHERE "{column}" IS NOT NULL' if column else ""
        value = connection.execute(sa.text(f'SELECT count(*) FROM "{table}"{where}')).scalar()
        return int(value or 0)

    # --- errors -----------------------------------------------------------------------------

    @abstractmethod
    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """A one-line ``FlowdbError`` for a known driver error (``text``: its first line)."""

    def server_timeout_message(self, exc: BaseException, text: str) -> str | None:
        """The API's one-line 503 for a query that ran out of time, naming the setting.

        ``None`` when ``exc`` is no timeout. Never names the database's location: API
        clients are not told where the database lives.
        """
        return None

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a statement that gave up waiting for a lock (worth a retry)."""
        return False

    def describe_blockers(self, connection: Connection, tables: frozenset[str]) -> str:
        """Who holds locks on ``tables`` (the oldest transaction first), for messages."""
        return "another connection"

    # --- SQL for migration helpers ------------------------------------------------------------

    @staticmethod
    @abstractmethod
    def text_position(needle: str, column: str) -> str:
        """SQL for the 1-based position of ``needle`` in ``column`` (0 when absent)."""

    # --- snapshots: the fresh install and its check (flowdb.database.fresh) -------------------

    def current_user_sql(self) -> str:
        """SQL for the database user, for the run record (default: this OS user, quoted)."""
        import getpass

        return "'" + getpass.getuser().replace("'", "''") + "'"

    def read_rows(self, table: str) -> list[dict[str, Any]] | None:
        """Every row of ``table`` by ``id``, read with the bare driver; ``None``: no such path.

        SQLite reads with ``sqlite3`` (``current`` then imports no SQLAlchemy); the
        default sends the caller to SQLAlchemy.
        """
        return None

    def run_script(self, statements: list[str]) -> None:
        """Run ``statements`` in one transaction, all or nothing (a fresh install).

        Fenced like a migration (``fence``): checked as it begins and, where DDL is
        transactional, once more before it commits.
        """
        engine = self.create_sync_engine("flowdb-fresh-install")
        self.fence(engine)
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
                if not self.ddl_commits:
                    self.check_lock(
                        connection.connection.dbapi_connection,
                        rolled_back=True,
                        where="what it was before this script",
                    )
        finally:
            engine.dispose()

    def dump_schema(self, exclude: frozenset[str]) -> list[str]:
        """The statements that recreate this database's tables (but ``exclude``) and rows."""
        raise NotImplementedError(f"Schema snapshots are not implemented for {self.label}")

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """The schema as comparable data: orders the engine varies are normalised.

        Tables (columns in order with type, default, nullability), constraints with
        names and actions, indexes with predicates, enum types, and each table's rows
        (but those of ``skip_rows``), sorted.
        """
        raise NotImplementedError(f"Schema catalogues are not implemented for {self.label}")

    @staticmethod
    def timestamp_type() -> Any:
        """The column type of flowdb's timestamps here, when not SQLAlchemy's own (``None``)."""
        return None

    @staticmethod
    def as_text(expression: str) -> str:
        """SQL casting ``expression`` (a JSON document, an enum) to text."""
        return f"CAST({expression} AS TEXT)"

    @staticmethod
    def upsert_update(key: str, columns: list[str]) -> str:
        """The clause after an INSERT that updates ``columns`` of a row whose ``key`` exists."""
        updates = ", ".join(f"{column} = excluded.{column}" for column in columns)
        return f"ON CONFLICT ({key}) DO UPDATE SET {updates}"

    @staticmethod
    def create_index_if_missing(kind: str, name: str, table: str, columns: str) -> str:
        """SQL creating index ``name`` (``kind``: ``INDEX``/``UNIQUE INDEX``) unless it exists."""
        return f"CREATE {kind} IF NOT EXISTS {name} ON {table} ({columns})"

    @staticmethod
    def drop_index_if_exists(name: str) -> str:
        """SQL dropping index ``name`` if it exists (flowdb names it ``ix_<table>__...``)."""
        return f"DROP INDEX IF EXISTS {name}"

    @classmethod
    def set_not_null(cls, connection: Connection, table: str, column: str) -> str:
        """SQL declaring ``column`` NOT NULL where no check can prove it first (MySQL)."""
        raise NotImplementedError(f"{cls.label} proves NOT NULL with a check constraint")

    @classmethod
    def has_constraint(cls, connection: Connection, table: str, name: str) -> bool:
        """Whether constraint ``name`` of ``table`` exists now (for reruns of migrations)."""
        raise NotImplementedError(f"{cls.label} reads constraints from its own catalog")


def first_line(exc: BaseException) -> str:
    """The first line of a driver error's own message (SQLAlchemy wraps it in ``orig``)."""
    source: Any = getattr(exc, "orig", None) or exc
    text = str(source).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def validate_server_url(url: DatabaseUrl, shown: str, example: str) -> None:
    """For a database server's URL: a database name is required; a bare ``@`` is refused.

    ``example`` is a well-formed URL of the dialect, shown in the message.
    """
    from flowdb.database.urls import unencoded_at
    from flowdb.errors import ConfigurationError

    if "@" in (url.url.host or "") or "@" in (url.url.database or ""):
        raise unencoded_at(shown)
    if not url.url.database:
        raise ConfigurationError(
            f"Database URL {shown!r} names no database; add one after the host, e.g. {example}."
        )


def dump_command_line(tool: str, url: DatabaseUrl, flags: dict[str, str], tail: list[str]) -> str:
    """``tool`` with the URL's host, port and user (``flags`` names their options), then ``tail``.

    For the line of a downgrade plan that says how to dump the database first: the
    password is never part of it (the tool asks, or reads its own password file).
    """
    import shlex

    words = [tool]
    for part, flag in flags.items():
        value = getattr(url.url, part)
        if value:
            words += [flag, str(value)]
    return shlex.join(words + tail)
