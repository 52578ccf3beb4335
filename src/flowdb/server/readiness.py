"""Whether this server can serve the database as it is now, for ``/api/ready``.

A load balancer drops a replica that is not ready. Answering "not ready" whenever the
database is not exactly at this code's head would take every replica out at once during
an upgrade, an outage made by the probe itself. So a replica is ready when:

- the database is at this code's head (and its tables are there, not only its revision); or
- it is ahead of this code's head (a newer release upgraded it, during a rolling
  upgrade) only by revisions whose files declared ``SERVES_PREVIOUS_CODE = True``, as
  recorded in the run record when they were applied; or
- it is behind head only by contract revisions (``fleet``: they wait for the older
  replicas to go), and every table and column this code's models use is there; or
- it is behind head while a migration runs (someone holds the migration lock), and every
  table and column this code's models use is already there (the expand phase is done).

Otherwise the answer says why, and what to run: for a migration left part way through,
the commands that finish or undo it (``partway``), never ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowdb.database import journal
from flowdb.database.fleet import pending_contracts
from flowdb.database.orm_models import Base
from flowdb.database.partway import part_way
from flowdb.database.status import SchemaStatus
from flowdb.database.target import Database


@dataclass(frozen=True)
class Verdict:
    """Ready or not, with the revisions and a one-line reason for operators."""

    ready: bool
    current: str | None
    head: str | None
    detail: str = ""


def judge(database: Database) -> Verdict:
    """Read the database's state and decide readiness (blocking: run it in a thread)."""
    status = database.status()
    stuck = part_way(status, database.history)
    if stuck is not None and stuck.mismatched:
        detail = f"The schema is not at any revision: {stuck.way_out()}."
        return Verdict(False, status.current, status.head, detail)
    if status.at_head:
        missing = missing_columns(database)
        if missing and stuck is not None:
            detail = (
                f"The database is at head {status.head} but {stuck.describe()} and {missing} "
                f"is missing: {stuck.way_out()}."
            )
            return Verdict(False, status.current, status.head, detail)
        if missing:
            detail = (
                f"The database is stamped at head {status.head} but {missing} is missing; "
                "recreate it with 'flowdb database reset' (after a backup) or restore it."
            )
            return Verdict(False, status.current, status.head, detail)
        return Verdict(True, status.current, status.head)
    if status.owner == "foreign":
        detail = f"The database is not flowdb's ({status.foreign_because})."
        return Verdict(False, status.current, status.head, detail)
    if status.owner == "newer":
        return _judge_ahead(database, status)
    where = status.current or "base (no schema)"
    behind = f"The database is at revision {where}, not at head {status.head}"
    waiting = pending_contracts(database, status.current) if stuck is None else []
    if waiting and not missing_columns(database):
        detail = (
            f"{behind}: only contract revision(s) {', '.join(waiting)} are left, which wait "
            "until no replica of an older release serves; the schema serves this code."
        )
        return Verdict(True, status.current, status.head, detail)
    holder = database.migration_running()
    if holder is None and stuck is not None:
        detail = f"{behind}, and {stuck.describe()}: {stuck.way_out()}."
        return Verdict(False, status.current, status.head, detail)
    if holder is None:
        return Verdict(
            False, status.current, status.head, f"{behind}; run 'flowdb database upgrade -y'."
        )
    missing = missing_columns(database)
    if missing:
        return Verdict(
            False,
            status.current,
            status.head,
            f"{behind}; a migration is running ({holder.describe()}) and {missing} "
            "is not there yet.",
        )
    return Verdict(
        True,
        status.current,
        status.head,
        f"A migration is running ({holder.describe()}); the schema already serves this code.",
    )


def _judge_ahead(database: Database, status: SchemaStatus) -> Verdict:
    """A database a newer flowdb upgraded: ready while every newer revision serves this code.

    This flowdb has no files for those revisions; what their files declared
    (``SERVES_PREVIOUS_CODE``, the parent) was recorded when they were applied.
    """
    assert status.current is not None
    ahead = journal.ahead_of(journal.read_runs(database, status), status.current, database.history)
    names = ", ".join(revision for revision, _ in ahead.revisions) or status.current
    newer = (
        f"The database is at revision {status.current}, {len(ahead.revisions) or 'some'} "
        f"revision(s) ahead of this server's head {status.head} ({names})"
    )
    if not ahead.reaches_head:
        detail = (
            f"{newer}, and its record does not lead back to {status.head}; run the newer server."
        )
        return Verdict(False, status.current, status.head, detail)
    breaking = [revision for revision, serves in ahead.revisions if not serves]
    if breaking:
        detail = (
            f"{newer}; {', '.join(breaking)} changed what this code uses "
            "(SERVES_PREVIOUS_CODE is not True); run the newer server."
        )
        return Verdict(False, status.current, status.head, detail)
    missing = missing_columns(database)
    if missing:
        detail = f"{newer}, but {missing} is missing; run the newer server."
        return Verdict(False, status.current, status.head, detail)
    detail = f"{newer}, each declared to keep serving the previous code."
    return Verdict(True, status.current, status.head, detail)


def missing_columns(database: Database) -> str:
    """The first table or column this code's models use that the database lacks, or ``""``."""
    live = database.columns()
    for table in Base.metadata.sorted_tables:
        columns = live.get(table.name)
        if columns is None:
            return f"table {table.name}"
        for column in table.columns:
            if column.name not in columns:
                return f"column {table.name}.{column.name}"
    return ""
