"""``--json``: one JSON document on stdout per command, errors included.

The convention every ``flowdb database`` command follows (README: "Output"):

* results on stdout, progress and messages on stderr, in text mode as in JSON mode;
* with ``--json`` stdout holds exactly one JSON document: the command's result, with
  ``"exit_code"``, or on failure ``{"error": "<the one line>", "exit_code": N}`` (the
  ``Error:`` line is still printed on stderr). Plans, backups and other text that
  text mode prints on stdout go to stderr instead.

A command asks for JSON with ``enable()`` as it starts; the CLI's edge
(``flowdb.cli.root``) asks ``enabled()`` when it reports a failure, and writes the
error document only when the command has not written its own (``emit``).
Stdlib only: imported by every command, also on the fast paths.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: The flag every command that prints JSON takes.
FLAG = "--json"


class _State:
    enabled = False
    written = False


def enable(on: bool = True) -> None:
    """Switch this run to JSON output (``on``), or leave it as it is."""
    if on:
        _State.enabled = True
        _State.written = False


def enabled() -> bool:
    """Whether this run prints JSON: a command enabled it, or its arguments ask for it.

    The arguments count too, so that a usage error found before the command runs (an
    unknown option beside ``--json``) still answers in JSON.
    """
    if _State.enabled:
        return True
    arguments = sys.argv[1:]
    if "--" in arguments:
        arguments = arguments[: arguments.index("--")]
    return FLAG in arguments


def reset() -> None:
    """Forget this run's state (the CLI's edge calls it as a run starts)."""
    _State.enabled = False
    _State.written = False


def emit(document: Any) -> None:
    """Write ``document`` as this run's one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
    _State.written = True


def emit_error(message: str, exit_code: int) -> None:
    """In JSON mode, write ``{"error", "exit_code"}`` unless the command wrote its document."""
    if enabled() and not _State.written:
        emit({"error": message, "exit_code": exit_code})


def step(revision: str, direction: str, seconds: float | None, title: str) -> dict[str, Any]:
    """One migration in a result: ``seconds`` is ``None`` when it has no time of its own."""
    return {
        "revision": revision,
        "direction": direction,
        "seconds": None if seconds is None else round(seconds, 3),
        "title": title,
    }
