"""Structured logs: with ``FLOWDB_LOG_FORMAT=json``, one JSON object per line on stderr.

Each object has ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger`` and
``message``, then the record's fields: those passed as ``extra={"fields": {...}}`` (a
request's id, route, status and latency), and those of a migration event passed as
``extra={"event": ...}`` (``database.events``: revision, phase, seconds, rows...).
Passwords never reach a line: every text is redacted (``redaction.redact_message``).

A leaf module importing only the standard library (``json`` when a line is written), so
the CLI can ask ``json_enabled()`` before anything else without slowing ``--help``. It
reads the variable itself, as ``Settings`` does (the name in any case), because the
CLI's edge must know the format before settings are read or fail to be.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

VARIABLE = "FLOWDB_LOG_FORMAT"
#: The loggers flowdb writes on; configured together.
FLOWDB_LOGGER = "flowdb"
#: What an event's fields are called in a line (the same names for every event).
_RENAMED = {"elapsed": "seconds", "waited": "seconds", "done": "rows_done", "total": "rows_total"}


def json_enabled() -> bool:
    """Whether ``FLOWDB_LOG_FORMAT`` asks for JSON lines (read from the environment now)."""
    for name, value in os.environ.items():
        if name.upper() == VARIABLE:
            return value.strip().lower() == "json"
    return False


def event_fields(event: object) -> dict[str, Any]:
    """A migration event's fields, named as lines name them, with ``event``: its kind."""
    from dataclasses import asdict, is_dataclass

    if not is_dataclass(event) or isinstance(event, type):
        return {}
    fields: dict[str, Any] = {"event": type(event).__name__}
    for name, value in asdict(event).items():
        if name == "text":
            continue  # the message already says it
        fields[_RENAMED.get(name, name)] = round(value, 4) if isinstance(value, float) else value
    return fields


def _redacted(value: Any) -> Any:
    from flowdb.redaction import redact_message

    if isinstance(value, str):
        return redact_message(value)
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_message(str(value))


def line(level: str, logger: str, message: str, fields: dict[str, Any] | None = None) -> str:
    """One log line: the JSON object of an event, every text in it redacted."""
    import datetime as dt
    import json

    from flowdb.redaction import redact_message

    now = dt.datetime.now(dt.UTC)
    document: dict[str, Any] = {
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "level": level.lower(),
        "logger": logger,
        "message": redact_message(message),
    }
    for name, value in (fields or {}).items():
        if name not in document:
            document[name] = _redacted(value)
    return json.dumps(document, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (``line``), its exception as one field."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's line: message, ``fields`` and event fields, the exception's text."""
        fields: dict[str, Any] = {}
        event = getattr(record, "event", None)
        if event is not None:
            fields.update(event_fields(event))
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            fields.update(extra)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return line(record.levelname, record.name, record.getMessage(), fields)


class JsonLines:
    """A text stream whose every line becomes one JSON log line on ``target``.

    Given to Rich as the console's file, it turns the CLI's messages (written for a
    terminal) into log lines without changing how each command prints them.
    """

    def __init__(self, target: IO[str], logger: str = "flowdb.cli", level: str = "info") -> None:
        self.target = target
        self.logger = logger
        self.level = level
        self._pending = ""

    def write(self, text: str) -> int:
        """Buffer ``text``; write a JSON line for each complete, non-blank line."""
        self._pending += text
        *complete, self._pending = self._pending.split("\n")
        for each in complete:
            if each.strip():
                self.target.write(line(self.level, self.logger, each.strip()) + "\n")
        return len(text)

    def flush(self) -> None:
        """Write what is buffered as a line of its own, then flush the target."""
        if self._pending.strip():
            self.target.write(line(self.level, self.logger, self._pending.strip()) + "\n")
        self._pending = ""
        self.target.flush()

    def isatty(self) -> bool:
        """Never a terminal: no colours, no spinner, no cursor movements."""
        return False

    @property
    def encoding(self) -> str:
        """What Rich asks of a file before it writes."""
        return "utf-8"


def configure_cli() -> None:
    """With JSON lines on: flowdb's loggers and Python's warnings write JSON on stderr.

    Records the CLI shows itself (``cli.output.MigrationReport``, installed per command
    and not propagating) are written by it; everything else flowdb logs (and warnings a
    library issues) goes through this handler instead of logging's last resort.
    """
    if not json_enabled():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Alembic's own INFO lines ("Running upgrade ...") stay hidden, as they are in text;
    # flowdb's events say the same with their fields.
    levels = {
        FLOWDB_LOGGER: logging.INFO,
        "py.warnings": logging.WARNING,
        "alembic": logging.WARNING,
    }
    for name, level in levels.items():
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
    logging.captureWarnings(True)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for JSON lines: its loggers and flowdb's, on stderr.

    uvicorn's access log is left without a handler: the server's own access records
    (``server.requests``) carry the request id, route and latency it lacks.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    named = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "flowdb.logs.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": named,
            "uvicorn.error": {**named, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            FLOWDB_LOGGER: {**named, "level": "DEBUG" if level == "trace" else level.upper()},
            "py.warnings": named,
        },
    }
