"""``FLOWDB_LOG_FORMAT=json`` on the real CLI: stderr holds JSON lines only, migration
steps carry their fields, errors are a JSON line too, and no line holds a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests.cli.helpers import flowdb_process
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

    installed = flowdb_process(url, "database", "upgrade", "-y", home=tmp_path, env=JSON)
    reverted = flowdb_process(
        url, "database", "downgrade", "-y", "-r", "-1", home=tmp_path, env=JSON
    )
    applied = flowdb_process(url, "database", "upgrade", "-y", home=tmp_path, env=JSON)

    for result in (installed, reverted, applied):
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stderr and PASSWORD not in result.stdout
    fresh = [r for r in parsed(installed.stderr) if r.get("event") == "FreshInstalled"]
    assert len(fresh) == 1 and fresh[0]["head"] == history.head
    assert isinstance(fresh[0]["seconds"], float)
    down = [r for r in parsed(reverted.stderr) if r.get("event") == "StepDone"]
    assert [(r["revision"], r["direction"]) for r in down] == [(history.head, "downgrade")]
    records = parsed(applied.stderr)
    up = [r for r in records if r.get("event") == "StepDone"]
    assert [(r["revision"], r["direction"]) for r in up] == [(history.head, "upgrade")]
    assert isinstance(up[0]["seconds"], float) and up[0]["seconds"] >= 0
    assert up[0]["logger"] == "flowdb.migrations" and up[0]["level"] == "info"
    assert up[0]["title"] == history.get(history.head).title
    phases = [r for r in records if r.get("event") == "PhaseStarted"]
    assert all(r["revision"] == history.head and r["phase"] for r in phases)


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
