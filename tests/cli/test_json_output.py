"""``--json`` and where output goes: one JSON document, results on stdout, progress on stderr."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from flowdb.database.history import load_history
from tests.cli.helpers import assert_one_line_error, current_revision, fingerprint, flowdb, ok

IDS = [revision.id for revision in load_history().revisions]
HEAD = IDS[-1]


def document(stdout: str) -> Any:
    """The one JSON document on stdout (``json.loads`` fails on anything more)."""
    return json.loads(stdout)


def test_upgrade_json_on_an_empty_database_reports_the_fresh_install(
    sqlite_url: str, tmp_path: Path
) -> None:
    result = ok(flowdb(sqlite_url, "database", "upgrade", "-y", "--json", home=tmp_path))

    found = document(result.stdout)
    assert found["command"] == "upgrade"
    assert found["before"] is None and found["after"] == HEAD
    assert [step["revision"] for step in found["steps"]] == IDS
    # The revisions landed together: no time of their own, one total for the install.
    assert {step["seconds"] for step in found["steps"]} == {None}
    assert {step["direction"] for step in found["steps"]} == {"upgrade"}
    assert found["fresh_install"]["head"] == HEAD
    assert found["fresh_install"]["revisions"] == len(IDS)
    assert 0 <= found["fresh_install"]["seconds"] <= found["seconds"]
    assert found["exit_code"] == 0
    assert current_revision(sqlite_url) == HEAD
    # Progress stays on stderr; the result line of text mode is not printed.
    assert "Installed the head schema" in result.stderr
    assert "Upgrade finished" not in result.stdout + result.stderr


def test_json_at_head_downgrade_and_upgrade_report_what_ran(
    sqlite_url: str, tmp_path: Path
) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=tmp_path))

    at_head = document(
        ok(flowdb(sqlite_url, "database", "upgrade", "--json", home=tmp_path)).stdout
    )
    down = ok(flowdb(sqlite_url, "database", "downgrade", "-y", "--json", home=tmp_path))
    up = ok(flowdb(sqlite_url, "database", "upgrade", "-y", "--json", home=tmp_path))

    assert (at_head["before"], at_head["after"], at_head["steps"]) == (HEAD, HEAD, [])
    assert at_head["exit_code"] == 0
    reverted = document(down.stdout)
    assert (reverted["before"], reverted["after"]) == (HEAD, IDS[-2])
    [step] = reverted["steps"]
    assert (step["revision"], step["direction"]) == (HEAD, "downgrade")
    assert isinstance(step["seconds"], float) and step["seconds"] >= 0
    assert reverted["fresh_install"] is None
    assert Path(reverted["backup"]).is_file()
    assert "reverts" in down.stderr  # the plan is text: on stderr in JSON mode
    applied = document(up.stdout)
    assert (applied["before"], applied["after"]) == (IDS[-2], HEAD)
    assert [(s["revision"], s["direction"]) for s in applied["steps"]] == [(HEAD, "upgrade")]
    assert current_revision(sqlite_url) == HEAD


def test_stamp_check_and_wait_json(sqlite_url: str, tmp_path: Path) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=tmp_path))

    stamped = document(
        ok(
            flowdb(sqlite_url, "database", "stamp", "-y", "-r", IDS[-2], "--json", home=tmp_path)
        ).stdout
    )
    assert (stamped["command"], stamped["before"], stamped["after"]) == ("stamp", HEAD, IDS[-2])
    assert current_revision(sqlite_url) == IDS[-2]
    ok(flowdb(sqlite_url, "database", "stamp", "-y", "head", home=tmp_path))

    checked = document(ok(flowdb(sqlite_url, "database", "check", "--json", home=tmp_path)).stdout)
    assert (checked["matches"], checked["differences"], checked["exit_code"]) == (True, [], 0)
    waited = document(ok(flowdb(sqlite_url, "database", "wait", "--json", home=tmp_path)).stdout)
    assert (waited["revision"], waited["at_head"], waited["exit_code"]) == (HEAD, True, 0)


def test_check_json_on_a_database_that_differs_exits_1_with_the_differences(
    sqlite_url: str, tmp_path: Path
) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=tmp_path))
    with sqlite3.connect(sqlite_url.split(":///", 1)[1]) as connection:
        connection.execute("DROP INDEX IF EXISTS ix_log_flow_run_id_timestamp")
        connection.execute("ALTER TABLE flow ADD COLUMN extra INTEGER")

    result = flowdb(sqlite_url, "database", "check", "--json", home=tmp_path)

    assert result.returncode == 1
    found = document(result.stdout)
    assert found["matches"] is False and found["exit_code"] == 1
    assert any("extra" in difference for difference in found["differences"])
    missing = flowdb(f"sqlite:///{tmp_path / 'none.db'}", "database", "check", "--json")
    assert missing.returncode == 1 and document(missing.stdout)["matches"] is False
    assert not (tmp_path / "none.db").exists()


def test_errors_in_json_mode_are_a_json_object_and_one_line(
    sqlite_url: str, tmp_path: Path
) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", IDS[2], home=tmp_path))
    before = fingerprint(sqlite_url)

    for args in (
        ("upgrade", "-y", "-r", "nope", "--json"),
        ("upgrade", "-y", "--bogus", "--json"),
        ("upgrade", "--json"),  # no terminal, no -y
        ("upgrade", "--dry-run", "--json"),
        ("stamp", "-y", "--json"),  # no revision
        ("wait", "--timeout", "0", "--json"),
    ):
        result = flowdb(sqlite_url, "database", *args, home=tmp_path)
        if "-y" in args:
            line = assert_one_line_error(result)
        else:  # the plan is printed first (on stderr: stdout holds the JSON), then refused
            [line] = [text for text in result.stderr.splitlines() if text.startswith("Error:")]
            assert result.stderr.splitlines()[-1] == line
        found = document(result.stdout)
        assert set(found) == {"error", "exit_code"}, (args, found)
        assert found["exit_code"] == result.returncode != 0, args
        assert line.removeprefix("Error: ") == found["error"], args
        assert fingerprint(sqlite_url) == before, args


def test_current_json_on_a_newer_database_is_one_document_with_the_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=tmp_path))
    with sqlite3.connect(sqlite_url.split(":///", 1)[1]) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")

    result = flowdb(sqlite_url, "database", "current", "--json", home=tmp_path)

    assert result.returncode == 7
    found = document(result.stdout)
    assert found["revision"] == "ffffffffffff" and found["owner"] == "newer"
    assert found["exit_code"] == 7 and found["error"] in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_results_go_to_stdout_and_progress_to_stderr(sqlite_url: str, tmp_path: Path) -> None:
    up = ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", IDS[-2], home=tmp_path))
    rest = ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=tmp_path))
    waited = ok(flowdb(sqlite_url, "database", "wait", home=tmp_path))

    assert up.stdout.splitlines()[-1].startswith("Upgrade finished: ")
    assert "↑" in up.stderr and "↑" not in up.stdout
    assert rest.stdout.splitlines()[-1].startswith("Upgrade finished: 1 migration(s) in ")
    assert waited.stdout == f"{sqlite_url.split(':///', 1)[1]} is at head ({HEAD}).\n"
    assert waited.stderr == ""


def test_a_one_line_docstring_gives_its_title_without_the_closing_quotes(
    sqlite_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(
        load_history().get(HEAD).path.parents[1],
        copy,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    head_file = next((copy / "versions").glob(f"*_{HEAD}_*.py"))
    text = head_file.read_text(encoding="utf-8")
    start = text.index('"""')
    end = text.index('"""', start + 3) + 3
    head_file.write_text(f'{text[:start]}"""One line only."""{text[end:]}', encoding="utf-8")
    home = tmp_path / "home"
    ok(flowdb(sqlite_url, "database", "upgrade", "-y", home=home, migrations=copy))

    current = ok(flowdb(sqlite_url, "database", "current", home=home, migrations=copy))

    assert f"Revision: {HEAD}  One line only.\n" in current.stdout
