"""Online migrations against a live database: bounded lock waits, fail-closed, repairs.

The data migrations split into short transactions (``migrations/online.py``). These
tests put real sessions in their way: a long API transaction holding a lock on
``flow_run``, an index build cancelled half-way, database-wide timeouts meant for the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.events import PhaseStarted
from flowdb.database.history import load_history
from flowdb.database.target import Database
from flowdb.errors import ExitCode, MigrationBlockedError, MigrationInProgressError
from tests.cli.helpers import assert_one_line_error, flowdb
from tests.dbtools import ADMIN_URL, in_progress, revision_of, seed_flow_runs, sync_engine

IDS = [revision.id for revision in load_history().revisions]
BEFORE_REINDEX = "1b5e8c2f7d43"
BACKFILL = "3d1a5e7b9f86"


class Blocker:
    """An API transaction left open on ``flow_run`` (ACCESS SHARE), until released."""

    def __init__(self, url: str) -> None:
        self.engine = sync_engine(url)
        self.connection = self.engine.connect()
        self.connection.execute(sa.text("SELECT count(*) FROM flow_run"))
        self.pid = self.connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()
        self.engine.dispose()


@pytest.fixture
def blocked(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Blocker]]:
    """A database before the re-index, with runs, and an open transaction on flow_run."""
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT", "0.3")
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_RETRIES", "2")
    alembic_upgrade(BEFORE_REINDEX)
    seed_flow_runs(postgres_url, 200)
    blocker = Blocker(postgres_url)
    try:
        yield postgres_url, blocker
    finally:
        blocker.release()


def test_a_long_transaction_makes_the_upgrade_fail_closed_naming_it(
    blocked: tuple[str, Blocker],
) -> None:
    url, blocker = blocked
    with pytest.raises(MigrationBlockedError) as caught:
        alembic_upgrade()
    message = str(caught.value)
    assert f"pid {blocker.pid}" in message
    assert "transaction open for" in message
    assert f"stays at {BEFORE_REINDEX}" in message
    assert revision_of(url) == BEFORE_REINDEX
    # The new indexes were built; what waits for the open transaction (dropping the old
    # indexes, the last phase's strong lock) rolled back, and the phase before it stays.
    part_way = in_progress(url)
    assert [revision for revision, _, _ in part_way] == ["2c9f4d1a8e65"]
    assert part_way[0][1] in (
        "index ix_flow_run__state_type_start_time",
        "drop index ix_flow_run__flow_id",
        "drop index ix_flow_run__state_type",
    )

    blocker.release()
    alembic_upgrade()  # the next run finishes what was started
    assert revision_of(url) == IDS[-1]
    assert in_progress(url) == ()


def test_the_cli_says_it_in_one_line_and_current_shows_the_migration_part_way(
    blocked: tuple[str, Blocker],
) -> None:
    url, blocker = blocked
    env = {"FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT": "0.3", "FLOWDB_MIGRATION_LOCK_RETRIES": "1"}
    result = flowdb(url, "database", "upgrade", "-y", env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.returncode == ExitCode.BUSY, result.stderr
    assert len(errors) == 1 and f"pid {blocker.pid}" in errors[0], result.stderr
    assert "retrying in" in result.stderr  # the retry was visible
    assert "Traceback" not in result.stderr

    current = flowdb(url, "database", "current")
    assert "Part way: 2c9f4d1a8e65 (phase " in current.stdout

    refused = flowdb(url, "database", "downgrade", "-y")
    assert_one_line_error(refused, "part way through", "flowdb database upgrade")
    assert refused.returncode == ExitCode.REFUSED


def test_other_queries_never_queue_behind_a_waiting_migration(
    blocked: tuple[str, Blocker],
) -> None:
    """While the migration waits for its strong lock, plain reads of flow_run go on.

    A DDL waiting in the lock queue blocks every later statement on its table; with a
    short lock timeout it leaves the queue before the readers notice.
    """
    url, _ = blocked
    waits: list[float] = []
    stop = threading.Event()

    def read_continuously() -> None:
        engine = sync_engine(url)
        try:
            with engine.connect() as connection:
                while not stop.is_set():
                    started = time.monotonic()
                    connection.execute(sa.text("SELECT name FROM flow_run LIMIT 1"))
                    connection.rollback()
                    waits.append(time.monotonic() - started)
                    time.sleep(0.01)
        finally:
            engine.dispose()

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        with pytest.raises(MigrationBlockedError):
            alembic_upgrade()
    finally:
        stop.set()
        reader.join(timeout=30)
    assert len(waits) > 20
    assert max(waits) < 2.0, f"a read waited {max(waits):.2f} s behind the migration"


def test_migrations_resume_from_the_last_committed_batch(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWDB_MIGRATION_BATCH_SIZE", "50")
    monkeypatch.setenv("FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT", "0.2")
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_RETRIES", "0")
    alembic_upgrade("2c9f4d1a8e65")
    seed_flow_runs(postgres_url, 230)
    engine = sync_engine(postgres_url)
    holder = engine.connect()

    class LockTheLastRunWhenTheBackfillStarts(logging.Handler):
        """An API transaction that takes the last run's row as the backfill begins."""

        def emit(self, record: logging.LogRecord) -> None:
            event = getattr(record, "event", None)
            if isinstance(event, PhaseStarted) and event.phase == "backfill":
                holder.execute(
                    sa.text(
                        "SELECT 1 FROM flow_run WHERE id = "
                        "(SELECT id FROM flow_run ORDER BY id DESC LIMIT 1) FOR UPDATE"
                    )
                )

    trap = LockTheLastRunWhenTheBackfillStarts()
    logger = logging.getLogger("flowdb.migrations")
    logger.addHandler(trap)
    try:
        with (
            caplog.at_level(logging.INFO, logger="flowdb.migrations"),
            pytest.raises(MigrationBlockedError),
        ):
            alembic_upgrade(BACKFILL)
    finally:
        logger.removeHandler(trap)
        holder.rollback()
        holder.close()
        engine.dispose()
    assert in_progress(postgres_url) == ((BACKFILL, "backfill", 200),)  # four batches of 50
    # the progress row keeps the backfill's total: `current`, the wait and /api/ready show it
    progress = Database.from_url(postgres_url).status().describe_progress()
    assert progress == f"{BACKFILL} (phase backfill, 200 of 230 rows done)"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flowdb.migrations"):
        alembic_upgrade(BACKFILL)
    messages = [record.getMessage() for record in caplog.records]
    assert f"{BACKFILL}: continuing from phase backfill (200 rows done)" in messages
    # one batch left, not five
    assert "flow_run: 230 rows so far (batch 1), 100% of 230 rows" in messages
    assert revision_of(postgres_url) == BACKFILL
    assert in_progress(postgres_url) == ()


def test_an_invalid_index_left_by_a_cancelled_build_is_rebuilt(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    alembic_upgrade(BEFORE_REINDEX)
    seed_flow_runs(postgres_url, 100)
    name = "ix_flow_run__flow_id_start_time"
    leave_an_invalid_index(postgres_url, f"CREATE INDEX CONCURRENTLY {name} ON flow_run (flow_id)")
    assert index_validity(postgres_url, name) is False

    alembic_upgrade()

    assert index_validity(postgres_url, name) is True
    engine = sync_engine(postgres_url)
    try:
        columns = sa.inspect(engine).get_indexes("flow_run")
    finally:
        engine.dispose()
    built = next(index for index in columns if index["name"] == name)
    assert built["column_names"] == ["flow_id", "start_time"]  # rebuilt, not kept


def leave_an_invalid_index(url: str, create: str) -> None:
    """Start a concurrent index build and cancel it half-way, as a killed migration would.

    A transaction holding a snapshot makes the build wait in its last phase; cancelling
    it there leaves the index INVALID.
    """
    engine = sync_engine(url)
    snapshot = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    snapshot.execute(sa.text("SELECT count(*) FROM flow"))  # an old snapshot to wait for
    builder = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    builder_pid = builder.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    failure: list[BaseException] = []

    def build() -> None:
        try:
            builder.execute(sa.text(create))
        except sa.exc.DBAPIError as error:
            failure.append(error)

    thread = threading.Thread(target=build)
    thread.start()
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for _ in range(100):
                waiting = connection.execute(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"),
                    {"p": builder_pid},
                ).scalar()
                if waiting == "Lock":
                    break
                time.sleep(0.05)
            connection.execute(sa.text("SELECT pg_cancel_backend(:p)"), {"p": builder_pid})
    finally:
        admin.dispose()
    thread.join(timeout=30)
    snapshot.rollback()
    snapshot.close()
    builder.close()
    engine.dispose()
    assert failure, "the build was not cancelled"


def index_validity(url: str, name: str) -> bool | None:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                    "ON c.oid = i.indexrelid WHERE c.relname = :n"
                ),
                {"n": name},
            ).scalar()
    finally:
        engine.dispose()


def test_timeouts_the_database_sets_for_the_api_do_not_bind_migrations(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = sa.make_url(postgres_url).database
            connection.execute(sa.text(f"ALTER DATABASE \"{name}\" SET lock_timeout = '1ms'"))
            connection.execute(sa.text(f"ALTER DATABASE \"{name}\" SET statement_timeout = '1ms'"))
    finally:
        admin.dispose()
    alembic_upgrade()
    assert revision_of(postgres_url) == IDS[-1]
    alembic_downgrade(BEFORE_REINDEX)


def test_a_downgrade_waits_for_an_unfinished_migration(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT", "0.2")
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_RETRIES", "0")
    alembic_upgrade(BEFORE_REINDEX)
    seed_flow_runs(postgres_url, 10)
    blocker = Blocker(postgres_url)
    try:
        with pytest.raises(MigrationBlockedError):
            alembic_upgrade()
    finally:
        blocker.release()
    with pytest.raises(MigrationInProgressError, match="part way through"):
        alembic_downgrade()
    assert revision_of(postgres_url) == BEFORE_REINDEX
