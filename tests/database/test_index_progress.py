"""The progress line of a concurrent index build, read from pg_stat_progress_create_index."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import sqlalchemy as sa

from flowdb.database.dialects.postgresql import PostgresDialect
from flowdb.database.dialects.sqlite import SqliteDialect
from flowdb.database.events import Progress
from flowdb.database.migrations.index_progress import describe, reported


def test_the_line_says_the_phase_the_share_and_the_time_left() -> None:
    assert describe("ix", "building index: scanning table", 400, 1000, 3.2) == (
        "ix: building index: scanning table, 40% (400 of 1,000), about 3 s left"
    )
    assert describe("ix", "waiting for writers before build", 0, 0, None) == (
        "ix: waiting for writers before build"
    )


def test_dialects_without_a_progress_view_report_nothing(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (id integer)"))
            assert SqliteDialect.read_index_build(connection, "t") is None
    finally:
        engine.dispose()


def test_a_build_waiting_for_a_writer_is_reported_with_its_phase(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE building (id integer)"))
            connection.execute(sa.text("INSERT INTO building SELECT generate_series(1, 2000)"))
        blocker = engine.connect()
        blocker.execute(sa.text("INSERT INTO building VALUES (0)"))  # open: the build waits
        failures: list[BaseException] = []

        def build() -> None:
            try:
                with engine.connect() as connection:
                    connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                        sa.text("CREATE INDEX CONCURRENTLY ix_building ON building (id)")
                    )
            except BaseException as error:  # reported by the assertion below
                failures.append(error)

        def events() -> list[Progress]:
            found = [getattr(r, "event", None) for r in caplog.records]
            return [e for e in found if isinstance(e, Progress)]

        builder = threading.Thread(target=build)
        with (
            caplog.at_level(logging.INFO, logger="flowdb.migrations"),
            reported("ix_building", "building", engine, PostgresDialect.read_index_build, 0.05),
        ):
            builder.start()
            deadline = time.monotonic() + 60
            while not events() and time.monotonic() < deadline:
                time.sleep(0.05)
            blocker.commit()
            blocker.close()
            builder.join(timeout=120)
        assert not failures, failures
        seen = events()
        assert seen, "no progress line while the build waited for the writer"
        assert seen[0].text.startswith("ix_building: waiting for writers before build")
        for event in seen:
            assert event.text.startswith("ix_building: ")
            assert event.done is not None and event.done >= 0
            assert event.total is None or event.done <= event.total
        with engine.connect() as connection:
            valid = connection.execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                    "ON c.oid = i.indexrelid WHERE c.relname = 'ix_building'"
                )
            ).scalar()
        assert valid is True
    finally:
        engine.dispose()


def test_the_watcher_ends_with_the_block_when_nothing_builds(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE idle (id integer)"))
        before = {t.name for t in threading.enumerate()}
        with reported("ix_idle", "idle", engine, PostgresDialect.read_index_build, 0.01):
            time.sleep(0.1)
        after = {t.name for t in threading.enumerate()}
        assert "flowdb-index-ix_idle" not in after - before
    finally:
        engine.dispose()


def test_a_build_shorter_than_one_interval_opens_no_second_connection(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    opened: list[str] = []
    sa.event.listen(engine, "connect", lambda *_: opened.append(threading.current_thread().name))
    try:
        with reported("ix_quick", "quick", engine, PostgresDialect.read_index_build, 5.0):
            pass
        assert opened == []
        # A build that outlasts an interval is watched, from a connection of its own.
        with reported("ix_slow", "slow", engine, PostgresDialect.read_index_build, 0.01):
            time.sleep(0.2)
        assert opened == ["flowdb-index-ix_slow"]
    finally:
        engine.dispose()
