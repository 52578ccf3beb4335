"""A migration left part way through, and the commands that take the database out of it.

A killed online migration (``migrations/online.py``), a killed MySQL step or downgrade
(``migrations/restartable.py``) or a killed fresh install leaves a row in
``flowdb_migration_progress``. Every command that meets one (``current``, ``stamp``,
``upgrade``, ``downgrade``, ``wait``, ``/api/ready``) says the same thing about it, from
here: what is part way, and which commands finish it or undo it.

While an upgrade of revision R runs, the version row holds the revision R started from;
it advances only when R completes. A version row that says otherwise (a ``stamp`` or a
bare ``alembic stamp`` over the killed run) no longer describes the schema: the way out
is to stamp the revision R started from back, then finish R.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flowdb.database.bookkeeping import DOWNGRADE_PHASE, FRESH_INSTALL_PHASE

if TYPE_CHECKING:
    from flowdb.database.history import History
    from flowdb.database.status import SchemaStatus

Kind = Literal["upgrade", "downgrade", "fresh install"]


@dataclass(frozen=True)
class PartWay:
    """One migration part way through, where the version row stands, and the way out."""

    revision: str
    phase: str
    rows: int
    kind: Kind
    #: The revision the version row held when the migration started (``None``: base).
    started_from: str | None
    #: The revision the version row holds now.
    recorded: str | None

    @property
    def mismatched(self) -> bool:
        """Whether the version row was moved (stamped) after the migration stopped."""
        return self.kind == "upgrade" and self.recorded != self.started_from

    def describe(self) -> str:
        """``migration 4e2b6f8c1a97 (phase backfill, 1,000 rows done) is part way through``."""
        if self.kind == "downgrade":
            return f"a downgrade is part way through reverting {self.revision}"
        if self.kind == "fresh install":
            return f"a fresh install of {self.revision} is part way through"
        return (
            f"migration {self.revision} (phase {self.phase}, {self.rows:,} rows done) is part "
            "way through"
        )

    def way_out(self) -> str:
        """The commands that finish it or undo it, as one sentence (no final stop)."""
        start = self.started_from or "base"
        if self.mismatched:
            return (
                f"the database is stamped at {self.recorded or 'base'} but migration "
                f"{self.revision}, which started from {start}, never finished: run 'flowdb "
                f"database stamp {start}' to put the record back, then 'flowdb database "
                "upgrade' to finish it"
            )
        if self.kind == "downgrade":
            return (
                f"run 'flowdb database downgrade -r {start}' to finish reverting it (what it "
                f"dropped is gone), then 'flowdb database upgrade -r {self.revision}' if you "
                "want it back"
            )
        if self.kind == "fresh install":
            return (
                "run 'flowdb database upgrade' to finish it (or, where it cannot resume, to drop "
                "it and install again: a fresh install holds no data yet)"
            )
        return (
            f"run 'flowdb database upgrade' to finish it; to undo it instead, finish it with "
            f"'flowdb database upgrade -r {self.revision}', then revert it with "
            f"'flowdb database downgrade -r {start}' (its finished phases cannot be "
            "reverted on their own)"
        )

    def allows_stamp(self, target: str | None) -> bool:
        """Whether stamping ``target`` keeps the record true: only the revision it started from."""
        return self.kind == "upgrade" and target == self.started_from


def part_way(status: SchemaStatus, history: History) -> PartWay | None:
    """The migration part way through in ``status`` (the oldest, if several), or ``None``."""
    if not status.known or not status.in_progress:
        return None
    known = [item for item in status.in_progress if history.knows(item[0])]
    if not known:
        return None
    revision, phase, rows = min(known, key=lambda item: history.position(item[0]))
    kind: Kind = "upgrade"
    if phase == DOWNGRADE_PHASE:
        kind = "downgrade"
    elif phase == FRESH_INSTALL_PHASE and status.current is None:
        kind = "fresh install"
    started_from = history.get(revision).down_revision
    if kind == "fresh install":
        started_from = None
    return PartWay(revision, phase, rows, kind, started_from, status.current)
