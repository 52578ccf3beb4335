"""What every dialect provides: the interface the rest of flowdb programs against.

Longer than 400 lines: the whole interface with its shared defaults, read in one place.
"""

from __future__ import annotations

import getpass
import shlex
import sys
from abc import ABCMeta, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.lockinfo import LockHolder, Waiter
from flowdb.database.tables import PROGRESS_TABLE, VERSION_TABLE
from flowdb.database.urls import DatabaseUrl, unencoded_at
from flowdb.errors import ConfigurationError, FlowdbError, MigrationLockLostError

if TYPE_CHECKING:
    # SQLAlchemy only for annotations: importing a dialect must not import it (start-up).
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

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
    #: Each progress row's ``rows_total`` where its table has that column and it is set.
    totals: tuple[tuple[str, int], ...] = ()
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

        in_progress: tuple[tuple[str, str, int], ...] = ()
        totals: tuple[tuple[str, int], ...] = ()
        if PROGRESS_TABLE in tables:
            # ``*``: a table an older flowdb created has no ``rows_total``.
            result = connection.execute(sa.text(f"SELECT * FROM {PROGRESS_TABLE}"))
            in_progress, totals = progress_rows(list(result.keys()), list(result))
        versions: list[str] | None = None
        if VERSION_TABLE in tables:
            rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
            versions = list(rows.scalars())
        return cls(versions=versions, tables=tables, in_progress=in_progress, totals=totals)


def progress_rows(
    names: list[str], rows: list[Any]
) -> tuple[tuple[tuple[str, str, int], ...], tuple[tuple[str, int], ...]]:
    """The progress table's rows as ``(revision, phase, rows done)`` and ``(revision, total)``."""
    index = {name.lower(): number for number, name in enumerate(names)}
    in_progress = tuple(
        (str(row[index["revision"]]), str(row[index["phase"]]), int(row[index["rows_done"]]))
        for row in rows
    )
    at = index.get("rows_total")
    totals = tuple(
        (str(row[index["revision"]]), int(row[at]))
        for row in rows
        if at is not None and row[at] is not None
    )
    return in_progress, totals


@dataclass(frozen=True)
class Features:
    """What a dialect can do, which migrations and commands ask before they act."""

    #: Whether ALTER TABLE needs Alembic's batch mode (table copies).
    render_as_batch: bool = False
    #: Whether enum types are objects of their own that migrations create and drop.
    native_enums: bool = False
    #: Whether indexes can be built without blocking writes (outside a transaction).
    concurrent_indexes: bool = False
    #: Whether constraints can be added unchecked and validated later without a strong lock.
    deferred_validation: bool = False
    #: Whether timestamps keep their time zone (else flowdb stores UTC without one).
    stores_time_zones: bool = True
    #: Whether each DDL statement commits by itself (MySQL), so migrations must be rerunnable
    #: statement by statement, and ALTER needs a column's full type (no Alembic renames).
    ddl_commits: bool = False
    #: Whether the server keeps a separate engine for reads (SQLite: plain BEGIN for reads).
    separate_read_engine: bool = False
    #: Whether one connection writes at a time (SQLite): the server queues its writes.
    single_writer: bool = False
    #: Seconds an online backfill leaves the write lock free between two batches, where
    #: writers take turns on one lock (SQLite: a waiting writer's busy handler retries
    #: every 100 ms at most, so a shorter gap lets the next batch take the lock first).
    batch_pause: float = 0.0
    #: Rows per data-migration batch unless FLOWDB_MIGRATION_BATCH_SIZE is set (None: the
    #: setting's default). SQLite's writers wait for a whole batch: its batches are small.
    default_batch_rows: int | None = None


class _DialectType(ABCMeta):
    """Dialect classes answer ``ddl_commits`` and ``render_as_batch`` from their ``features``.

    Released revision files ask the class (``h.dialect().ddl_commits``) and cannot
    change (they are hashed in the manifest); everything else asks ``features``.
    """

    @property
    def ddl_commits(cls) -> bool:
        """``features.ddl_commits``, for released revisions."""
        features: Features = cls.features  # type: ignore[attr-defined]
        return features.ddl_commits

    @property
    def render_as_batch(cls) -> bool:
        """``features.render_as_batch``, for released revisions."""
        features: Features = cls.features  # type: ignore[attr-defined]
        return features.render_as_batch


class Dialect(metaclass=_DialectType):
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
    #: What this dialect can do.
    features: ClassVar[Features] = Features()

    def __init__(self, url: DatabaseUrl, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        #: The connection whose server session holds the migration lock, while this
        #: dialect holds it there (``None``: not held, or a lock no session can lose).
        self.lock_session: Connection | None = None

    @classmethod
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

    def check_migratable(self) -> None:
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

    def untracked_server_sessions(self, connection: Connection, application_name: str) -> list[str]:
        """Client addresses of server sessions named ``application_name`` (older replicas).

        Releases before the replicas' heartbeat can be seen only by their sessions; only
        PostgreSQL names them (``pg_stat_activity.application_name``). Elsewhere: none.
        """
        return []

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
        # Not imported yet means not raised by it: SQLite's reads use sqlite3 alone.
        errors: Any = sys.modules.get("sqlalchemy.exc")
        return errors is not None and isinstance(exc, errors.NoSuchTableError)

    # --- the migration lock ---------------------------------------------------------------

    @abstractmethod
    def migration_lock(self, command: str, waiter: Waiter) -> AbstractContextManager[None]:
        """Hold this database's cross-process migration lock for the block."""

    @classmethod
    def read_index_build(cls, connection: Connection, table: str) -> tuple[str, int, int] | None:
        """How far the index build on ``table`` got, read on ``connection``, if reported.

        ``(phase, done, total)``; ``None`` where the server reports nothing (every
        dialect but PostgreSQL) or no build on ``table`` runs. For the progress line of
        the migration that builds it (``migrations.index_progress``).
        """
        return None

    def index_build_progress(self) -> tuple[str, int, int] | None:
        """How far an index build in this database got: ``(phase, done, total)``, if known.

        Only where the server reports it (PostgreSQL's ``pg_stat_progress_create_index``);
        elsewhere ``None``. For the wait's report while a migration builds an index.
        """
        return None

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

    def take_fence(self, dbapi_connection: Any) -> None:
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

    @abstractmethod
    def cleaner_lock(self) -> AbstractContextManager[bool]:
        """Try the lock that keeps two cleans apart, without waiting: yields whether held.

        Never the migration lock (a clean does not take it): two replicas' retention
        services, or a service and ``flowdb database clean``, never delete at once.
        """

    def reclaim_space(self, tables: list[str]) -> str:
        """Give back the space a clean of ``tables`` freed where the server can; say what."""
        return "the freed pages are reused for new rows"

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
                if not self.features.ddl_commits:
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
    words = [tool]
    for part, flag in flags.items():
        value = getattr(url.url, part)
        if value:
            words += [flag, str(value)]
    return shlex.join(words + tail)
