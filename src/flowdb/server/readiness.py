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

Judging reads the catalog and every table's columns: far too much for a probe polled
every few seconds by every load balancer. ``ReadinessCache`` keeps the last verdict and
judges again only when the version row changed (one small query on the server's own
pool, made at most every ``KEY_EVERY_SECONDS``; behind head the lock's holder too) or
the verdict is older than ``RECHECK_SECONDS`` (``NOT_READY_RECHECK_SECONDS`` for a
"no", which a starting migration can turn into a "yes").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowdb.database import journal
from flowdb.database.fleet import pending_contracts
from flowdb.database.orm_models import Base
from flowdb.database.partway import part_way
from flowdb.database.status import SchemaStatus
from flowdb.database.target import Database
from flowdb.errors import FlowdbError

if TYPE_CHECKING:
    from flowdb.server.engine import ServerDatabase

#: Longest a "ready" verdict is reused while the version row stays the same.
RECHECK_SECONDS = 10.0
#: Longest a "not ready" verdict is reused while the version row stays the same.
NOT_READY_RECHECK_SECONDS = 2.0
#: How often the version row (and, behind head, the lock's holder) is read at most: probes
#: in between are answered from memory.
KEY_EVERY_SECONDS = 1.0


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
            f"{behind}: revision(s) {', '.join(waiting)} are left, from the contract "
            f"{waiting[0]} on, which waits until no replica of an older release serves; the "
            "schema serves this code."
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


class ReadinessCache:
    """The last verdict, reused while what it depends on is unchanged and it is recent.

    At head that is the version row; behind or ahead of it, also the migration lock's
    holder (a migration starting or ending changes the answer without a new version).
    """

    def __init__(self) -> None:
        self._verdict: Verdict | None = None
        self._key: object = None
        self._at = 0.0
        self._key_at = 0.0
        self._lock = asyncio.Lock()

    async def verdict(self, server: ServerDatabase) -> Verdict:
        """The cached verdict, or a new one (``judge`` in a thread) when it may be stale."""
        from anyio import to_thread

        cached = self._verdict
        recent = time.monotonic() - self._key_at < KEY_EVERY_SECONDS
        if cached is not None and recent and self._fresh(self._key):
            return cached
        with_holder = cached is not None and not _plainly_at_head(cached)
        key = await _key(server, with_holder=with_holder)
        if self._fresh(key):
            assert self._verdict is not None
            self._key_at = time.monotonic()
            return self._verdict
        async with self._lock:  # one judgement at a time; the others reuse it
            if self._verdict is not cached and self._fresh(key):
                assert self._verdict is not None
                return self._verdict
            self._verdict = None
            key = await _key(server, with_holder=True)
            verdict = await to_thread.run_sync(judge, server.database)
            if _plainly_at_head(verdict) and isinstance(key, tuple):
                key = key[0]
            self._verdict, self._key, self._at = verdict, key, time.monotonic()
            self._key_at = self._at
            return verdict

    def forget(self) -> None:
        """Judge again at the next probe (this server changed the schema itself)."""
        self._verdict = None

    def _fresh(self, key: object) -> bool:
        if self._verdict is None or key is None or key != self._key:
            return False
        limit = RECHECK_SECONDS if self._verdict.ready else NOT_READY_RECHECK_SECONDS
        return time.monotonic() - self._at < limit


def _plainly_at_head(verdict: Verdict) -> bool:
    """Ready at head: nothing but the version row (or time) changes that."""
    return verdict.ready and verdict.current == verdict.head


async def _key(server: ServerDatabase, *, with_holder: bool) -> object:
    """What the verdict depends on, read cheaply; ``None`` when unreadable (judge again)."""
    from anyio import to_thread

    versions = await _version_key(server)
    if versions is None or not with_holder:
        return versions
    try:
        holder = await to_thread.run_sync(server.database.migration_running)
    except FlowdbError:
        return None
    return (versions, None if holder is None else holder.describe())


async def _version_key(server: ServerDatabase) -> object:
    """The version rows as they are now, or ``None`` when they cannot be read (judge again)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    try:
        async with server.session() as session:
            rows = await session.execute(sa.text("SELECT version_num FROM alembic_version"))
            return tuple(sorted(str(row[0]) for row in rows))
    except (SQLAlchemyError, OSError):
        return None
