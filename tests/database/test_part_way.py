"""A migration left part way: every command tells the same way out, and both ways work.

The split of task keys (4e2b6f8c1a97, an online data migration) is made to fail in its
backfill, after its first phase committed: a real part-way state on each dialect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.target import Database
from flowdb.errors import ExitCode
from flowdb.server.readiness import judge
from tests.cli.helpers import assert_one_line_error, flowdb, ok
from tests.dbtools import in_progress, revision_of, set_revision, sync_engine

SPLIT = "4e2b6f8c1a97"
BEFORE = "3d1a5e7b9f86"
HEAD = load_history().head
KEYS = ["a:1", "a:2", "b", "c:x:y"]


@pytest.fixture
def part_way(configured: str) -> Iterator[str]:
    """A database whose split failed in its backfill, with ``KEYS`` in one flow run."""
    alembic_upgrade(BEFORE)
    as_text = configured.startswith("sqlite")  # SQLite keeps UUIDs as hex text
    flow, run = uuid.uuid4(), uuid.uuid4()

    def value(u: uuid.UUID) -> Any:
        return u.hex if as_text else u

    engine = sync_engine(configured)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO flow (id, name) VALUES (:id, 'etl')"), {"id": value(flow)}
            )
            connection.execute(
                sa.text(
                    "INSERT INTO flow_run (id, flow_id, name, expected_start_time) "
                    "VALUES (:id, :flow, 'r', '2026-01-01 00:00:00')"
                ),
                {"id": value(run), "flow": value(flow)},
            )
            for key in KEYS:
                connection.execute(
                    sa.text(
                        "INSERT INTO task_run (id, flow_run_id, task_key, name) "
                        "VALUES (:id, :run, :key, 't')"
                    ),
                    {"id": value(uuid.uuid4()), "run": value(run), "key": key},
                )
    finally:
        engine.dispose()

    def die_in_the_backfill(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE task_run SET dynamic_key"):
            raise RuntimeError("killed in the backfill")

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", die_in_the_backfill)
    try:
        with pytest.raises(Exception, match="killed in the backfill"):
            alembic_upgrade(SPLIT)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", die_in_the_backfill)
    assert revision_of(configured) == BEFORE
    assert [revision for revision, _, _ in in_progress(configured)] == [SPLIT]
    yield configured


def task_keys(url: str) -> list[tuple[str, str | None]]:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("task_run")}
            dynamic = "dynamic_key" if "dynamic_key" in columns else "NULL"
            rows = connection.execute(sa.text(f"SELECT task_key, {dynamic} FROM task_run"))
            return sorted((str(key), value) for key, value in rows)
    finally:
        engine.dispose()


def test_every_command_names_both_ways_out_and_the_way_back_works(
    part_way: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    before = task_keys(part_way)

    current = ok(flowdb(part_way, "database", "current", home=home))
    assert "at head" not in current.stdout
    assert f"Part way: {SPLIT}" in current.stdout
    assert f"downgrade -r {BEFORE}" in current.stdout, current.stdout

    stamp = flowdb(part_way, "database", "stamp", "-y", "head", home=home)
    assert_one_line_error(stamp, "Cannot stamp", "part way", "'flowdb database upgrade'")
    assert stamp.returncode == ExitCode.REFUSED
    assert revision_of(part_way) == BEFORE

    wait = flowdb(part_way, "database", "wait", "--timeout", "0", home=home)
    assert_one_line_error(wait, "part way", f"upgrade -r {SPLIT}", f"downgrade -r {BEFORE}")
    assert wait.returncode == ExitCode.NO and "reset" not in wait.stderr

    verdict = judge(Database.from_url(part_way))
    assert not verdict.ready
    assert f"downgrade -r {BEFORE}" in verdict.detail and "reset" not in verdict.detail

    refused = flowdb(part_way, "database", "downgrade", "-y", home=home)
    assert_one_line_error(refused, "part way", f"upgrade -r {SPLIT}", f"downgrade -r {BEFORE}")
    assert refused.returncode == ExitCode.REFUSED
    assert task_keys(part_way) == before  # the refusals changed nothing

    # The way back, exactly as the refusal said: finish it, then revert it.
    ok(flowdb(part_way, "database", "upgrade", "-y", "-r", SPLIT, home=home))
    ok(flowdb(part_way, "database", "downgrade", "-y", "-r", BEFORE, home=home))
    assert revision_of(part_way) == BEFORE and in_progress(part_way) == ()
    assert task_keys(part_way) == sorted((key, None) for key in KEYS)


def test_a_stamp_past_a_part_way_migration_is_put_back_then_finished(
    part_way: str, tmp_path: Path
) -> None:
    """What a stamp over the killed run left (the tester's case): the record says head."""
    home = tmp_path / "home"
    set_revision(part_way, HEAD)  # as a bare 'alembic stamp head' (or an older flowdb) did

    current = ok(flowdb(part_way, "database", "current", home=home))
    assert "at head" not in current.stdout
    assert f"stamp {BEFORE}" in current.stdout, current.stdout

    verdict = judge(Database.from_url(part_way))
    assert not verdict.ready
    assert f"stamp {BEFORE}" in verdict.detail and "reset" not in verdict.detail

    for direction in ("upgrade", "downgrade"):
        refused = flowdb(part_way, "database", direction, "-y", home=home)
        assert_one_line_error(refused, "part way", f"stamp {BEFORE}")
        assert refused.returncode == ExitCode.REFUSED
        assert revision_of(part_way) == HEAD

    # The way out the line gives: put the record back, then finish.
    ok(flowdb(part_way, "database", "stamp", "-y", BEFORE, home=home))
    ok(flowdb(part_way, "database", "upgrade", "-y", home=home))
    assert revision_of(part_way) == HEAD and in_progress(part_way) == ()
    split = {key: (key.partition(":")[0], key.partition(":")[2]) for key in KEYS}
    assert task_keys(part_way) == sorted(split.values())
