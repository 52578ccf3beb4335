"""Helpers for tests that talk to real databases (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from tests import forkserver

T = TypeVar("T")

ADMIN_URL = os.environ.get(
    "FLOWDB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIALECTS = ["sqlite", "postgresql", "mariadb"]
MARIADB_ADMIN_URL = os.environ.get(
    "FLOWDB_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/mysql"
)


def plain_engine(url: str, connect_args: dict[str, Any] | None = None, **options: Any) -> sa.Engine:
    """An engine for the tests' own statements on ``url``: no pool, no TLS to MariaDB.

    PyMySQL tries TLS by default and builds a TLS context for each connection (about
    0.1 s under load); the test servers are local, so the tests' own connections skip it.
    On PostgreSQL, the engine's first connection does not look up HSTORE (no test uses it).
    """
    arguments = dict(connect_args or {})
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        arguments["ssl_disabled"] = True
    if backend == "postgresql" and parsed.get_driver_name() == "psycopg":
        options.setdefault("use_native_hstore", False)
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=arguments, **options)


def _run_on_server(admin_url: str, statement: str, server: str | None = None) -> None:
    """Run ``statement`` on a test server with its admin URL, outside any transaction.

    With ``server`` (its name), an unreachable server fails the test saying it is required.
    """
    admin = plain_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(statement))
    except sa.exc.OperationalError as exc:
        if server is None:
            raise
        pytest.fail(f"{server} is required for this test and is not reachable: {exc}")
    finally:
        admin.dispose()


def _new_database(admin_url: str, create: str, server: str) -> str:
    """Create a database named ``flowdb_test_<random>`` with ``create`` and return its URL."""
    name = f"flowdb_test_{uuid.uuid4().hex[:12]}"
    _run_on_server(admin_url, create.format(name=name), server)
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def create_mariadb_database(charset: str = "utf8mb4") -> str:
    """Create an empty database on the MariaDB test server and return its URL."""
    create = f"CREATE DATABASE `{{name}}` CHARACTER SET {charset}"
    return _new_database(MARIADB_ADMIN_URL, create, "MariaDB")


def drop_mariadb_database(url: str) -> None:
    """Drop a database made by ``create_mariadb_database``."""
    _run_on_server(MARIADB_ADMIN_URL, f"DROP DATABASE IF EXISTS `{sa.make_url(url).database}`")


def create_postgres_database() -> str:
    """Create an empty database on the test server and return its URL."""
    return _new_database(ADMIN_URL, 'CREATE DATABASE "{name}"', "PostgreSQL")


def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, disconnecting its sessions."""
    name = sa.make_url(url).database
    _run_on_server(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sync_engine(url: str) -> sa.Engine:
    """A plain engine for test assertions (sync drivers, no flowdb behaviour)."""
    from flowdb.database.target import Database

    return plain_engine(Database.from_url(url).dialect.sync_url)


def scalar(url: str, query: str) -> Any:
    """The first column of the first row ``query`` returns on ``url`` (its own connection)."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    """The database's revision as flowdb reads it (``None``: empty), without writing."""
    from flowdb.database.target import Database

    return Database.from_url(url).status().current


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for memory databases and other dialects)."""
    from flowdb.database.target import Database

    return getattr(Database.from_url(url).dialect, "path", None)


def table_names(url: str) -> set[str]:
    """The names of the tables in the database at ``url``."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def set_revision(url: str, revision: str) -> None:
    """Overwrite the recorded revision, as a newer flowdb would have left it."""
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        engine.dispose()


def schema_snapshot(url: str) -> dict[str, Any]:
    """Everything reflection can see of a database's schema, in a comparable form.

    Tables with their columns (type, nullability, default), primary keys, foreign keys
    (with ON DELETE), indexes, unique and check constraints; PostgreSQL's enum types;
    and the revisions stamped in ``alembic_version``. Two databases with equal snapshots
    have the same schema, at the same revision, for every purpose flowdb has.
    """
    # One connection for the whole reflection: with NullPool every inspector call would
    # connect again (PyMySQL builds a TLS context per connection: 0.1 s each, 100+ calls).
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return _schema_snapshot(connection)
    finally:
        engine.dispose()


def _schema_snapshot(connection: sa.Connection) -> dict[str, Any]:
    """``schema_snapshot`` on an open connection."""
    inspector = sa.inspect(connection)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        tables[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": sorted((repr(fk) for fk in inspector.get_foreign_keys(table)), key=str),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(
                (str(c["name"]), c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
        }
    snapshot: dict[str, Any] = {"tables": tables}
    if "alembic_version" in tables:
        query = sa.text("SELECT version_num FROM alembic_version")
        snapshot["versions"] = sorted(connection.execute(query).scalars())
    if connection.dialect.name == "postgresql":
        snapshot["enums"] = sorted(
            (e["name"], tuple(e["labels"]))
            for e in inspector.get_enums()  # type: ignore[attr-defined]
        )
    return snapshot


def run_in_threads_at_once(action: Callable[[], object], count: int) -> list[BaseException]:
    """Start ``count`` threads that call ``action`` together (behind a barrier).

    Returns the exceptions they raised. A thread still running after three minutes
    fails the calling test: a hang is a bug, not a slow run.
    """
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait(timeout=60)
            action()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


def data_checksums(url: str) -> dict[str, str]:
    """A SHA-256 per table over all its rows, in a form both dialects agree on.

    Rows are sorted; UUIDs, timestamps and JSON documents are normalised (hex, UTC ISO,
    sorted keys). Two databases with equal checksums hold the same data.
    """
    import datetime as dt
    import hashlib
    import json

    def normal(value: Any) -> str:
        if isinstance(value, uuid.UUID):
            return value.hex
        if isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return aware.astimezone(dt.UTC).isoformat()
        if isinstance(value, dict | list):
            return json.dumps(value, sort_keys=True)
        return repr(value)

    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            sums = {}
            for table in sorted(sa.inspect(connection).get_table_names()):
                if table == "flowdb_migration_run":
                    continue  # the record of runs: when and by whom differs by design
                rows = sorted(
                    "|".join(normal(v) for v in row)
                    for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))
                )
                sums[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            return sums
    finally:
        engine.dispose()


def in_progress(url: str) -> tuple[tuple[str, str, int], ...]:
    """Migrations part way through, as flowdb reads them: ``(revision, phase, rows)``."""
    from flowdb.database.target import Database

    return Database.from_url(url).status().in_progress


def seed_flow_runs(url: str, count: int, **columns: Any) -> list[uuid.UUID]:
    """One flow with ``count`` runs, inserted in batches; returns the runs' ids.

    Only the columns every revision's ``flow_run`` has are written (id, flow_id, name),
    plus ``columns`` (name -> value, the same for every run), so it works at any revision.
    """
    flow = sa.table("flow", sa.column("id", sa.Uuid), sa.column("name"))
    run = sa.table(
        "flow_run",
        sa.column("id", sa.Uuid),
        sa.column("flow_id", sa.Uuid),
        sa.column("name"),
        *(sa.column(name, sa.DateTime(timezone=True)) for name in columns),
    )
    flow_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(count)]
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(flow).values(id=flow_id, name=f"f-{flow_id.hex[:6]}"))
            for start in range(0, count, 5_000):
                connection.execute(
                    sa.insert(run),
                    [
                        {"id": run_id, "flow_id": flow_id, "name": f"r{n}", **columns}
                        for n, run_id in enumerate(ids[start : start + 5_000], start=start)
                    ],
                )
    finally:
        engine.dispose()
    return ids


@contextmanager
def lock_holder(url: str, seconds: float = 600) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the migration lock until the block ends (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.database.lock_holder", str(seconds)],
        env={**os.environ, "FLOWDB_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()


def holder_description(url: str, holder: subprocess.Popen[str]) -> str:
    """How flowdb must describe ``holder`` (a ``lock_holder`` process) holding ``url``'s lock.

    The start of the phrase, up to the time. Where the holder says who it is (PostgreSQL's
    application_name, SQLite's holder file): its command, pid and host. On MariaDB/MySQL a
    waiter sees only the server's side: the connection that holds the lock, as the server
    itself answers ``IS_USED_LOCK``, and that connection's client address, whose port must
    be a socket of the holder process (so the message points at the right process).
    """
    import socket

    connection_id = lock_connection(url)
    if connection_id is None:
        return f"flowdb upgrade (pid {holder.pid} on {socket.gethostname()}, since "
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            client = connection.execute(
                sa.text("SELECT host FROM information_schema.processlist WHERE id = :id"),
                {"id": connection_id},
            ).scalar()
    finally:
        engine.dispose()
    assert int(str(client).rsplit(":", 1)[1]) in tcp_ports(holder.pid), client
    return f"server connection {connection_id} (client {client}, last statement "


def lock_connection(url: str) -> int | None:
    """The server connection holding flowdb's lock on MariaDB/MySQL, as the server answers.

    ``None`` on the other dialects, whose locks are not held by a server connection id.
    Fails when nobody holds a MariaDB/MySQL lock.
    """
    from flowdb.database.dialects.mysql import MysqlDialect
    from flowdb.database.target import Database

    dialect = Database.from_url(url).dialect
    if not isinstance(dialect, MysqlDialect):
        return None
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT IS_USED_LOCK(:name)")
            found = connection.execute(query, {"name": dialect.lock_name}).scalar()
    finally:
        engine.dispose()
    assert found is not None, "nobody holds the migration lock"
    return int(found)


def tcp_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets (Linux: from ``/proc``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def upgrade_process(environment: dict[str, str]) -> subprocess.Popen[str]:
    """A real ``flowdb database upgrade -y`` process with ``environment``: stdin empty,
    stdout and stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowdb", "database", "upgrade", "-y"],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def upgrade_forked(environment: dict[str, str]) -> subprocess.Popen[str]:
    """``upgrade_process``, forked from the fork server (``tests.forkserver``): for tests
    whose subject starts after the imports (a signal or a lost lock once a step is
    reported); the signal tests of ``tests/cli/test_signals.py`` cover the imports."""
    return forkserver.Popen(["-m", "flowdb", "database", "upgrade", "-y"], env=environment)


def upgrades_at_once(url: str, count: int, **env: str) -> list[tuple[int, str, str]]:
    """``count`` processes running ``flowdb database upgrade -y`` on ``url`` at the same time.

    ``env`` adds ``FLOWDB_*`` settings. Returns each one's exit code, stdout and stderr.
    The processes are real and race for real; they are forked one right after the other
    from the fork server (``tests.forkserver``), whose imports they share, so they reach
    the lock closer together than interpreters started one by one, and cost no start-up.
    """
    environment = {**os.environ, "FLOWDB_DATABASE_URL": url, **env}
    command = ["-m", "flowdb", "database", "upgrade", "-y"]
    done = forkserver.run_together([command] * count, env=environment, timeout=300)
    return [(result.returncode, result.stdout, result.stderr) for result in done]


#: Schemas every PostgreSQL database has; anything else a test made is dropped by a reset.
_PG_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"

#: Anything a test may have left in a PostgreSQL database: a non-zero count means a reset.
_PG_LEFTOVERS = f"""
SELECT
  (SELECT count(*) FROM pg_namespace
     WHERE nspname NOT IN {_PG_SYSTEM_SCHEMAS} AND nspname NOT LIKE 'pg_temp_%'
       AND nspname NOT LIKE 'pg_toast_temp_%' AND nspname <> 'public')
  + (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)
  + (SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace)
  + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
  + (SELECT count(*) FROM pg_db_role_setting
       WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'public'
       AND (nspowner <> 'pg_database_owner'::regrole
            OR nspacl::text <> '{{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}}'))
  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'public') - 1
"""


def reset_postgres_database(url: str) -> None:
    """Make the database at ``url`` as empty as a new one, in milliseconds when possible.

    Other sessions on it are ended (as ``DROP DATABASE ... WITH (FORCE)`` did); when a
    test left anything (a schema, a table, a type, a function, a database or role
    setting, a changed ``public`` schema), every schema but the system ones is dropped
    and ``public`` made again as PostgreSQL makes it. Raises when the database is gone.
    One plain psycopg session does it all (a superuser ends other sessions from any
    database): it runs before every PostgreSQL test, where two engines' sessions and
    their first-connect queries cost the server about 10 ms.
    """
    import psycopg

    parsed = sa.make_url(url)
    name = parsed.database
    assert name is not None
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    # A test may have set a database-wide timeout (ALTER DATABASE ... SET): not for this.
    untimed = "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
    with psycopg.connect(conninfo, autocommit=True, options=untimed) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if not _scalar(connection, _PG_LEFTOVERS):
            return
        schemas = connection.execute(
            "SELECT nspname FROM pg_namespace "
            f"WHERE nspname NOT IN {_PG_SYSTEM_SCHEMAS} AND nspname NOT LIKE 'pg_%'"
        ).fetchall()
        statements = [f'DROP SCHEMA "{schema}" CASCADE' for (schema,) in schemas]
        statements += [
            "CREATE SCHEMA public AUTHORIZATION pg_database_owner",
            "GRANT USAGE ON SCHEMA public TO PUBLIC",
            "COMMENT ON SCHEMA public IS 'standard public schema'",
            f'ALTER DATABASE "{name}" RESET ALL',
        ]
        roles = connection.execute(
            "SELECT r.rolname FROM pg_db_role_setting s JOIN pg_roles r "
            "ON r.oid = s.setrole WHERE s.setdatabase = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        statements += [f'ALTER ROLE "{role}" IN DATABASE "{name}" RESET ALL' for (role,) in roles]
        with connection.transaction():
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]  # built from names
        assert not _scalar(connection, _PG_LEFTOVERS), "reset incomplete"


def _scalar(connection: Any, query: str) -> Any:
    """The first column of the first row of ``query`` on a psycopg connection."""
    row = connection.execute(query).fetchone()
    return row[0] if row else None


def reset_mariadb_database(url: str) -> str:
    """An empty utf8mb4 database under the name of ``url``; returns its URL.

    Other connections using it are killed; a database that holds anything (a table, a
    view, a routine, an event) or has another character set is dropped and made again,
    which on MariaDB costs little more than dropping its tables one by one.
    """
    name = sa.make_url(url).database
    admin = plain_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for (session,) in connection.execute(
                sa.text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = :name AND id <> CONNECTION_ID()"
                ),
                {"name": name},
            ):
                with suppress(sa.exc.OperationalError, sa.exc.InternalError):  # ended already
                    connection.execute(sa.text(f"KILL {int(session)}"))
            leftovers = connection.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM information_schema.tables "
                    "        WHERE table_schema = :name)"
                    " + (SELECT count(*) FROM information_schema.routines "
                    "    WHERE routine_schema = :name)"
                    " + (SELECT count(*) FROM information_schema.events "
                    "    WHERE event_schema = :name)"
                    " + ((SELECT count(*) FROM information_schema.schemata s "
                    "     JOIN information_schema.collations c"
                    "     ON c.collation_name = s.default_collation_name"
                    "     WHERE s.schema_name = :name AND c.character_set_name = 'utf8mb4'"
                    "     AND c.is_default = 'Yes') = 0)"
                ),
                {"name": name},
            ).scalar()
            if leftovers:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
                connection.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        admin.dispose()
    return url


class WorkerDatabase:
    """One database per test process (xdist worker), made empty again for each test.

    Creating and dropping a database per test costs seconds under load; a reset costs
    milliseconds when the test left nothing and a schema drop when it did. Whatever
    goes wrong with a reset (the test dropped or broke the database) ends in a new
    database, so each test still starts from an empty one of its own.
    """

    def __init__(
        self, create: Callable[[], str], drop: Callable[[str], None], reset: Callable[[str], object]
    ) -> None:
        self._create, self._drop, self._reset = create, drop, reset
        self.url: str | None = None

    def fresh(self) -> str:
        """The URL of the worker's database, empty."""
        if self.url is not None:
            try:
                self._reset(self.url)
                return self.url
            except Exception:
                self.close()
        self.url = self._create()
        return self.url

    def close(self) -> None:
        """Drop the worker's database (the end of the session, or a failed reset)."""
        if self.url is not None:
            url, self.url = self.url, None
            self._drop(url)


def nullable_columns(url: str, table: str) -> set[str]:
    """The columns of ``table`` that may hold NULL in the database at ``url``."""
    engine = sync_engine(url)
    try:
        columns = sa.inspect(engine).get_columns(table)
        return {column["name"] for column in columns if column["nullable"]}
    finally:
        engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    """The columns of ``table`` in the database at ``url``."""
    engine = sync_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def shared_by_workers(factory: pytest.TempPathFactory, name: str, make: Callable[[], T]) -> T:
    """``make()``, called by the first test process of the run that asks for ``name``.

    The value is pickled to a file in the run's temporary folder (under xdist, the parent
    of the workers' own folders, which belongs to this run alone); the other processes
    read it from there. For what is costly to make and the same in every process, such as
    the schemas of clean databases to compare with.
    """
    import pickle

    from filelock import FileLock

    folder = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = folder.parent
    path = folder / f"{name}.pickle"
    with FileLock(f"{path}.lock"):
        if path.exists():
            with path.open("rb") as handle:
                value: T = pickle.load(handle)
            return value
        value = make()
        with path.open("wb") as handle:
            pickle.dump(value, handle)
        return value
