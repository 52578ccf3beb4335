"""Waiting for the schema to reach head (Airflow's ``db check-migrations``).

Replicas that do not migrate (``FLOWDB_MIGRATE_ON_START=false``) and deployment
scripts wait here for the migration job: the database is polled, read-only, until it
is at head with no migration part way through. A database that cannot become head by
waiting (a newer flowdb's, another application's, a damaged file) ends the wait at
once; an unreachable or busy one is retried until the time is up, and then its own
error ends the wait.

``wait_for_head`` (``flowdb database wait``) gives up after a fixed time. A replica
(``SchemaWaiter``) waits as long as the migration visibly goes on and gives up only
after ``FLOWDB_SCHEMA_WAIT_TIMEOUT`` seconds in which nothing moved; each look is a
``WaitState`` (where the schema is, the migration's phase, rows done and total, an
estimate of the time left, the lock's holder) that the server logs and answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from flowdb.database.partway import part_way
from flowdb.errors import (
    DatabaseBusyError,
    DatabaseUnreachableError,
    FlowdbError,
    MigrationLockTimeoutError,
    SchemaNotAtHeadError,
    SchemaWaitTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

POLL_SECONDS = 0.5
#: Errors that may go away while waiting (the server starts, the migration commits).
_RETRIED = (DatabaseUnreachableError, DatabaseBusyError, MigrationLockTimeoutError)


def wait_for_head(
    database: Database,
    timeout: float,
    *,
    poll: float = POLL_SECONDS,
    failure: type[FlowdbError] = SchemaWaitTimeoutError,
    hint: str = "run 'flowdb database upgrade -y', or wait longer (--timeout)",
) -> SchemaStatus:
    """Return the status once ``database`` is at head; raise ``failure`` after ``timeout`` s.

    Each read waits at most the time left (not ``FLOWDB_MIGRATION_LOCK_TIMEOUT``).
    """
    deadline = time.monotonic() + timeout
    last_error: FlowdbError | None = None
    while True:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            status = _bounded(database, remaining).status()
        except _RETRIED as error:
            last_error = error
        else:
            status.require_known(database)
            if status.at_head and not status.in_progress:
                return status
            last_error = None
        if time.monotonic() >= deadline:
            if last_error is not None:
                raise type(last_error)(
                    f"Gave up waiting after {timeout:g} s for the schema of "
                    f"{database.describe()}: {last_error}"
                )
            raise failure(
                f"{database.describe()[:1].upper()}{database.describe()[1:]} is at "
                f"{status.current or 'base'}, {status.pending} migration(s) behind head "
                f"{status.head}, after waiting {timeout:g} s; {_hint(database, status, hint)}."
            )
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))


def _hint(database: Database, status: SchemaStatus, hint: str) -> str:
    """``hint``, or for a migration left part way through, the commands that resolve it."""

    stuck = part_way(status, database.history)
    if stuck is None:
        return hint
    return f"{stuck.describe()}: {stuck.way_out()}"


def _bounded(database: Database, seconds: float) -> Database:
    """``database`` with its read waits bounded by ``seconds``."""
    if seconds >= database.settings.migration_lock_timeout:
        return database
    settings = replace(database.settings, migration_lock_timeout=seconds)
    dialect = type(database.dialect)(database.url, settings)
    return replace(database, settings=settings, dialect=dialect)


#: Seconds between the waiting replica's log lines.
LOG_EVERY_SECONDS = 10.0
#: Longest a single read of the waiter may wait (a busy SQLite file, a slow server).
_READ_BOUND_SECONDS = 5.0


@dataclass(frozen=True)
class WaitState:
    """What a replica waiting for the schema saw on its last look, for logs and ``/api/ready``."""

    at_head: bool
    current: str | None
    head: str | None
    pending: int
    #: The migration lock's holder, described, or ``None`` when nobody holds it.
    holder: str | None
    #: The migration part way through: ``(revision, phase, rows done, rows total or None)``.
    migration: tuple[str, str, int, int | None] | None
    #: Rows per second over the current phase, once two looks saw rows move.
    rate: float | None
    #: Estimated seconds left in the current phase (needs the total and a rate).
    eta: float | None
    waited: float
    #: Seconds since the last sign of life (a holder, or progress that moved).
    quiet: float
    #: The last read's error (the database unreachable), or ``""``.
    error: str = ""
    #: An index build's ``(phase, done, total)`` where the server reports it (PostgreSQL).
    index_build: tuple[str, int, int] | None = None

    def line(self) -> str:
        """One line: where the schema stands, what runs, how far, time left, who holds the lock."""
        if self.error:
            waited = f"waited {self.waited:.0f} s"
            return f"waiting for the schema: cannot read it ({self.error}); {waited}"
        parts = [
            f"waiting for the schema: at {self.current or 'base'}, {self.pending} migration(s) "
            f"behind head {self.head}"
        ]
        if self.migration is not None:
            revision, phase, done, total = self.migration
            how_far = f"{done:,} of {total:,} rows" if total else f"{done:,} rows done"
            if total:
                how_far += f" ({min(done / total, 1.0):.0%})"
            if self.eta is not None:
                how_far += f", about {format_seconds(self.eta)} left"
            parts.append(f"migration {revision} in phase {phase}, {how_far}")
        if self.index_build is not None:
            step, done, total = self.index_build
            # Some phases (a concurrent build's validation) report no totals: name them only.
            counted = f", {done:,} of {total:,} ({min(done / total, 1.0):.0%})" if total else ""
            parts.append(f"index build {step}{counted}")
        if self.holder is not None:
            parts.append(f"the migration lock is held by {self.holder}")
        else:
            parts.append(f"nobody holds the migration lock (quiet for {self.quiet:.0f} s)")
        return "; ".join(parts) + f"; waited {self.waited:.0f} s"

    def as_json(self) -> dict[str, object]:
        """The state as JSON for ``/api/ready``'s ``waiting`` member."""
        migration: dict[str, object] | None = None
        if self.migration is not None:
            revision, phase, done, total = self.migration
            migration = {
                "revision": revision,
                "phase": phase,
                "rows_done": done,
                "rows_total": total,
                "rows_per_second": None if self.rate is None else round(self.rate, 1),
                "seconds_left": None if self.eta is None else round(self.eta),
            }
        return {
            "current": self.current,
            "head": self.head,
            "pending": self.pending,
            "lock_holder": self.holder,
            "migration": migration,
            "waited_seconds": round(self.waited, 1),
            "quiet_seconds": round(self.quiet, 1),
            "error": self.error or None,
            "index_build": None
            if self.index_build is None
            else dict(zip(("phase", "done", "total"), self.index_build, strict=True)),
        }


def format_seconds(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h 5 min``: a rough duration for estimates."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(int(seconds / 60), 60)
    return f"{hours} h {minutes} min"


class SchemaWaiter:
    """Watches a database until it reaches head; gives up only when nothing moves.

    The rule: the wait goes on as long as the migration visibly progresses, that is
    while someone holds the migration lock, or the version row or a migration's
    recorded progress (phase, rows done) changed since the last look. It fails once
    ``timeout`` seconds pass with none of these (or with the database unreachable), so a
    long upgrade never ends a waiting replica, but a migration job that never came (or
    died part way) does, after ``FLOWDB_SCHEMA_WAIT_TIMEOUT``.
    """

    def __init__(
        self,
        database: Database,
        timeout: float,
        *,
        failure: type[FlowdbError] = SchemaNotAtHeadError,
        hint: str = "run 'flowdb database upgrade -y', set FLOWDB_MIGRATE_ON_START=true, or "
        "raise FLOWDB_SCHEMA_WAIT_TIMEOUT",
        serve_contracts: bool = False,
    ) -> None:
        self.database = _bounded(database, _READ_BOUND_SECONDS)
        #: A server's wait ends behind head by contract revisions only (``serves_this_code``);
        #: ``flowdb database wait`` waits for head itself.
        self.serve_contracts = serve_contracts
        self.timeout = timeout
        self.failure = failure
        self.hint = hint
        self.started = time.monotonic()
        self.last_activity = self.started
        self._signature: object = None
        #: (revision, phase, when first seen, rows then) for the rate.
        self._phase_start: tuple[str, str, float, int] | None = None
        self._last_error: FlowdbError | None = None
        self._last_status: SchemaStatus | None = None

    def observe(self) -> WaitState:
        """Look once: read the status and the lock's holder, note any sign of life."""
        now = time.monotonic()
        try:
            status = self.database.status()
            status.require_known(self.database)
            holder = None if status.at_head else self.database.migration_running()
        except _RETRIED as error:
            self._last_error = error
            return WaitState(
                False, None, None, 0, None, None, None, None, now - self.started,
                now - self.last_activity, str(error),
            )  # fmt: skip
        self._last_error = None
        self._last_status = status
        signature = (status.current, status.in_progress)
        if holder is not None or signature != self._signature:
            self.last_activity = now
        self._signature = signature
        migration = _migration(status, self.database)
        rate = eta = None
        if migration is None:
            self._phase_start = None
        else:
            revision, phase, done, total = migration
            start = self._phase_start
            if start is None or start[:2] != (revision, phase):
                self._phase_start = (revision, phase, now, done)
            elif now > start[2] and done > start[3]:
                rate = (done - start[3]) / (now - start[2])
                if total:
                    eta = max(total - done, 0) / rate
        index_build = None
        if migration is not None and migration[1].startswith("index "):
            try:
                with self.database.errors():
                    index_build = self.database.dialect.index_build_progress()
            except FlowdbError:
                index_build = None  # only a detail of the report
        return WaitState(
            index_build=index_build,
            at_head=(
                serves_this_code(self.database, status, holder is not None)
                if self.serve_contracts
                else status.at_head and not status.in_progress
            ),
            current=status.current,
            head=status.head,
            pending=status.pending,
            holder=None if holder is None else holder.describe(),
            migration=migration,
            rate=rate,
            eta=eta,
            waited=now - self.started,
            quiet=now - self.last_activity,
        )

    def give_up(self, state: WaitState) -> FlowdbError | None:
        """The error that ends the wait, once ``timeout`` seconds passed with no sign of life."""
        if state.at_head or state.quiet < self.timeout:
            return None
        if self._last_error is not None:
            return type(self._last_error)(
                f"Gave up waiting after {state.quiet:g} s for the schema of "
                f"{self.database.describe()}: {self._last_error}"
            )
        where = self.database.describe()
        status = self._last_status
        assert status is not None
        return self.failure(
            f"{where[:1].upper()}{where[1:]} is at {status.current or 'base'}, "
            f"{status.pending} migration(s) behind head {status.head}, and no migration ran "
            f"or progressed for {self.timeout:g} s; {_hint(self.database, status, self.hint)}."
        )

    def wait(
        self, report: Callable[[WaitState], None] | None = None, *, poll: float = POLL_SECONDS
    ) -> WaitState:
        """Look every ``poll`` s until head (returned) or :meth:`give_up` (raised).

        ``report`` gets each state (the server keeps the last one for ``/api/ready``).
        """
        while True:
            state = self.observe()
            if report is not None:
                report(state)
            if state.at_head:
                return state
            failure = self.give_up(state)
            if failure is not None:
                raise failure
            time.sleep(poll)


def _migration(status: SchemaStatus, database: Database) -> tuple[str, str, int, int | None] | None:
    """The migration part way through, with its total when its progress row records one."""
    from flowdb.database.partway import part_way

    stuck = part_way(status, database.history)
    if stuck is None:
        return None
    totals = dict(status.totals)
    return (stuck.revision, stuck.phase, stuck.rows, totals.get(stuck.revision))


def serves_this_code(database: Database, status: SchemaStatus, locked: bool) -> bool:
    """Whether a server of this code may serve the database as it stands, without waiting.

    At head, or behind it by contract revisions only while no migration holds the lock
    (``locked``): the upgrade stopped before them because replicas of an older release
    serve (``fleet``), and the replicas of this release must be ready meanwhile, or a
    rolling update that keeps the old replicas until the new ones are ready would wait
    on itself (the old ones never leave, the contract never runs). A migration that
    holds the lock is waited for, as behind any other revision.
    """
    from flowdb.database.fleet import pending_contracts

    if status.in_progress:
        return False
    if status.at_head:
        return True
    return not locked and bool(pending_contracts(database, status.current))


def first_look(database: Database) -> bool:
    """Whether a server may serve at once (``serves_this_code``); raise when waiting cannot help.

    A database another application or a newer flowdb owns fails at once, and so does
    one behind head when ``FLOWDB_SCHEMA_WAIT_TIMEOUT`` is 0. Otherwise a replica that
    does not migrate starts listening and waits (``SchemaWaiter``).
    """
    status = database.status()
    status.require_known(database)
    if status.at_head and not status.in_progress:
        return True
    if serves_this_code(database, status, database.migration_running() is not None):
        return True
    if database.settings.schema_wait_timeout <= 0:
        SchemaWaiter(database, 0).wait()
    return False
