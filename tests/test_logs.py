"""``flowdb.logs``: the JSON line of a record, its event's fields, redaction, the CLI's
stream of lines, and how the setting is read."""

from __future__ import annotations

import io
import json
import logging

import pytest

from flowdb import logs
from flowdb.database.events import Progress, StepDone

SECRET = "hunter2-Zz"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("flowdb.migrations", logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_step_is_one_line_with_its_fields() -> None:
    step = StepDone("upgrade", "4e2b6f8c1a97", "Split task_run.task_key", 1.23456)
    document = json.loads(logs.JsonFormatter().format(record("Applied %s", "x", event=step)))

    assert document["level"] == "info"
    assert document["logger"] == "flowdb.migrations"
    assert document["message"] == "Applied x"
    assert document["time"].endswith("Z") and "T" in document["time"]
    assert document["event"] == "StepDone"
    assert (document["revision"], document["direction"]) == ("4e2b6f8c1a97", "upgrade")
    assert document["seconds"] == 1.2346
    progress = Progress("flow_run: 10 rows", done=10, total=40)
    fields = logs.event_fields(progress)
    assert fields == {"event": "Progress", "rows_done": 10, "rows_total": 40}


def test_no_password_survives_in_the_message_the_fields_or_the_exception() -> None:
    url = f"postgresql://flowdb:{SECRET}@db.example:5432/flowdb"
    try:
        raise RuntimeError(f"could not connect to {url}")
    except RuntimeError:
        import sys

        failure = record(f"connecting to {url}", fields={"url": url, "nested": [url]})
        failure.exc_info = sys.exc_info()
    text = logs.JsonFormatter().format(failure)

    assert SECRET not in text
    document = json.loads(text)
    assert document["url"] == "postgresql://flowdb:***@db.example:5432/flowdb"
    assert "RuntimeError" in document["exception"]


def test_the_cli_stream_turns_each_printed_line_into_a_json_line() -> None:
    target = io.StringIO()
    stream = logs.JsonLines(target)

    stream.write("Database: sqlite:///x.db\nplan ")
    stream.write("line\n\n")
    stream.write("tail without newline")
    stream.flush()

    lines = [json.loads(line) for line in target.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "Database: sqlite:///x.db",
        "plan line",
        "tail without newline",
    ]
    assert {line["logger"] for line in lines} == {"flowdb.cli"}
    assert not stream.isatty()


@pytest.mark.parametrize(
    ("value", "expected"), [("json", True), (" JSON ", True), ("text", False), ("", False)]
)
def test_the_setting_is_read_from_the_environment(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_LOG_FORMAT", value)
    assert logs.json_enabled() is expected
    monkeypatch.delenv("FLOWDB_LOG_FORMAT")
    monkeypatch.setenv("flowdb_log_format", value)  # any case, as Settings reads it
    assert logs.json_enabled() is expected


def test_settings_refuse_an_unknown_format(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowdb.errors import ConfigurationError
    from flowdb.settings import get_settings

    monkeypatch.setenv("FLOWDB_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="FLOWDB_LOG_FORMAT"):
        get_settings()
