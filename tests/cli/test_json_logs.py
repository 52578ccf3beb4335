"""``FLOWDB_LOG_FORMAT=json`` on the real CLI: stderr holds JSON lines only, migration
steps carry their fields, errors are a JSON line too, and no line holds a password."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests.cli.helpers import flowdb_process
from tests.dbtools import seed_flow_runs
from tests.server.test_json_logs import PASSWORD, parsed, with_password

JSON = {"FLOWDB_LOG_FORMAT": "json"}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_steps_are_json_lines_with_their_fields(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = str(request.getfixturevalue(f"{'postgres' if dialect == 'postgresql' else 'sqlite'}_url"))
    if dialect == "postgresql":
        url = with_password(url)
    history = load_history()
    # The flow_run.ended_at pair (end_time copied in batches), and the pair after it.
    expand, contract = history.revisions[-4].id, history.revisions[-3].id
    later = [revision.id for revision in history.revisions[-2:]]

    installed = flowdb_process(url, "database", "upgrade", "-y", home=tmp_path, env=JSON)
    reverted = flowdb_process(
        url, "database", "downgrade", "-y", "-r", "-4", home=tmp_path, env=JSON
    )
    # Runs whose end_time the expand revision copies, two rows per batch: progress lines.
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    seed_flow_runs(url, 5, end_time=moment, expected_start_time=moment)
    batches = {**JSON, "FLOWDB_MIGRATION_BATCH_SIZE": "2"}
    applied = flowdb_process(url, "database", "upgrade", "-y", home=tmp_path, env=batches)

    for result in (installed, reverted, applied):
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stderr and PASSWORD not in result.stdout
    fresh = [r for r in parsed(installed.stderr) if r.get("event") == "FreshInstalled"]
    assert len(fresh) == 1 and fresh[0]["head"] == history.head
    assert isinstance(fresh[0]["seconds"], float)
    down = [r for r in parsed(reverted.stderr) if r.get("event") == "StepDone"]
    assert [(r["revision"], r["direction"]) for r in down] == [
        *((revision, "downgrade") for revision in reversed(later)),
        (contract, "downgrade"),
        (expand, "downgrade"),
    ]
    records = parsed(applied.stderr)
    up = [r for r in records if r.get("event") == "StepDone"]
    assert [(r["revision"], r["direction"]) for r in up] == [
        (expand, "upgrade"),
        (contract, "upgrade"),
        *((revision, "upgrade") for revision in later),
    ]
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in up)
    assert up[0]["logger"] == "flowdb.migrations" and up[0]["level"] == "info"
    assert up[0]["title"] == history.get(expand).title
    phases = [r for r in records if r.get("event") == "PhaseStarted"]
    assert ("backfill", expand) in {(r["phase"], r["revision"]) for r in phases}
    # The expand's progress lines: between its first phase and its step's end.
    first = next(
        n
        for n, r in enumerate(records)
        if r.get("event") == "PhaseStarted" and r["revision"] == expand
    )
    last = next(n for n, r in enumerate(records) if r is up[0])
    progress = [r for r in records[first:last] if r.get("event") == "Progress"]
    assert progress, records
    assert all(0 < r["rows_done"] <= 5 for r in progress)
    assert max(r["rows_done"] for r in progress) == 5
    assert {r["rows_total"] for r in progress} == {5}


def test_an_error_is_one_json_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://flowdb:{PASSWORD}@127.0.0.1:1/nowhere"

    result = flowdb_process(url, "database", "current", home=tmp_path, env=JSON)

    assert result.returncode != 0
    assert PASSWORD not in result.stderr + result.stdout
    (record,) = parsed(result.stderr)
    assert record["level"] == "error"
    assert record["message"].startswith("Error: ")


def test_text_stays_the_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"

    result = flowdb_process(url, "database", "upgrade", "-y", home=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() and not result.stderr.lstrip().startswith("{")
