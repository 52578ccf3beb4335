"""The events migration commands report while they run, as typed values.

Commands log on the ``flowdb.migrations`` loggers with ``extra={"event": ...}``; the
CLI (``flowdb.cli.output``) shows them. Loggers keep the library free of any
presentation, and these classes are the contract between the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["upgrade", "downgrade"]


@dataclass(frozen=True)
class StepDone:
    """One migration applied (upgrade) or reverted (downgrade).

    ``elapsed`` is ``None`` for the revisions of a fresh install: they land together,
    in one script, and have no time of their own (``FreshInstalled`` has the total).
    """

    direction: Direction
    revision: str
    title: str
    elapsed: float | None


@dataclass(frozen=True)
class Progress:
    """How far a long step (a data migration) got; shown on the spinner.

    ``text`` is the whole line (with the share done and the time left when known);
    ``done`` and ``total`` are its rows, for callers that want the numbers.
    """

    text: str
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class PhaseStarted:
    """An online migration committed its work so far and began its next phase."""

    revision: str
    phase: str


@dataclass(frozen=True)
class LockWait:
    """A command is waiting for a lock that someone else holds."""

    holder: str
    waited: float


@dataclass(frozen=True)
class BackupWritten:
    """A copy of the database was written before a change (``database.backup``)."""

    path: str


@dataclass(frozen=True)
class FreshInstalled:
    """An empty database got the head schema from the dialect's snapshot (``fresh``)."""

    head: str
    revisions: int
    #: "in one transaction", or "statement by statement" where DDL commits by itself.
    how: str
    elapsed: float


@dataclass(frozen=True)
class Outcome:
    """How a command ended (nothing to do, stamped); the CLI says it in its result line."""

    text: str


Event = StepDone | Progress | PhaseStarted | LockWait | BackupWritten | FreshInstalled | Outcome
