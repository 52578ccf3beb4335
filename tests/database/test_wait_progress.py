"""What a waiting replica reports about a migration: totals, time left, index builds."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import sqlalchemy as sa

from flowdb.database.target import Database
from flowdb.database.waiting import WaitState, format_seconds
from tests.dbtools import sync_engine


def test_an_index_build_reports_its_progress_on_postgresql(postgres_url: str) -> None:
    engine = sync_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE big (id int, note text)"))
        connection.execute(
            sa.text("INSERT INTO big SELECT n, md5(n::text) FROM generate_series(1, 1500000) n")
        )
    database = Database.from_url(postgres_url)
    assert database.dialect.index_build_progress() is None  # nothing builds
    seen: list[tuple[str, int, int]] = []

    def build() -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("CREATE INDEX CONCURRENTLY ix_big_note ON big (note)"))

    builder = threading.Thread(target=build)
    builder.start()
    try:
        while builder.is_alive():
            found = database.dialect.index_build_progress()
            if found is not None:
                seen.append(found)
            time.sleep(0.02)
    finally:
        builder.join()
        engine.dispose()
    assert seen, "the build ended before it was seen"
    # Every look names a phase; where it has totals, done is within them. A concurrent
    # build ends with phases that report none (validation), so the scan must have had some.
    assert all(phase and 0 <= done <= (total or done) for phase, done, total in seen), seen
    assert any(total > 0 for _, _, total in seen), seen


def test_the_wait_line_names_rows_time_left_holder_and_index_build() -> None:
    state = WaitState(
        at_head=False,
        current="aaa",
        head="bbb",
        pending=1,
        holder="flowdb upgrade (pid 7 on web-1, since 10:00:00 UTC)",
        migration=("bbb", "backfill", 250_000, 1_000_000),
        rate=1000.0,
        eta=750.0,
        waited=30.0,
        quiet=0.0,
        index_build=("building index: scanning table", 40, 100),
    )
    line = state.line()
    assert "at aaa, 1 migration(s) behind head bbb" in line
    assert "250,000 of 1,000,000 rows (25%), about 12 min left" in line
    assert "held by flowdb upgrade (pid 7" in line
    assert "index build building index: scanning table, 40 of 100 (40%)" in line
    validating = replace(state, index_build=("index validation: sorting tuples", 0, 0))
    assert "index build index validation: sorting tuples;" in validating.line()
    body = state.as_json()
    assert body["migration"] == {
        "revision": "bbb",
        "phase": "backfill",
        "rows_done": 250_000,
        "rows_total": 1_000_000,
        "rows_per_second": 1000.0,
        "seconds_left": 750,
    }
    assert [format_seconds(s) for s in (5, 600, 7500)] == ["5 s", "10 min", "2 h 5 min"]
