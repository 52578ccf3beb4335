"""The migration commands on a ``Database``: lock first, then look, plan, ask, run.

Longer than 400 lines: the commands share their steps under the lock, one sequence.

Every command that writes the schema takes the migration lock before it reads
anything, so a waiter always names the holder and honours the timeout, and the plan
it shows is the plan it runs. The steps under the lock:

1. read the status and refuse a database this flowdb cannot work with (newer, or
   another application's, unless ``take_over`` where the command allows it);
2. plan (``planning``): resolve the revision argument against the history;
3. check the plan against the database (name clashes before the first step, data a
   migration cannot convert: ``preconditions``);
4. ask: ``approve(plan, status)`` may show the plan (and what it destroys) and say
   no, which ends the command with nothing changed;
5. run the plan (``runner``): one transaction per migration.

The reference API (``alembic_commands``) and the CLI both call these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowdb.database import bookkeeping, fresh, journal, planning
from flowdb.database.events import Direction, Outcome
from flowdb.database.failures import translate
from flowdb.database.fingerprints import file_hash
from flowdb.database.fresh import (
    BOOKKEEPING,
    resumes,
    usable_snapshot,
    why_not_usable,
    write_snapshot,
)
from flowdb.database.impact import check_name_clashes, downgrade_losses
from flowdb.database.partway import part_way
from flowdb.database.planning import Declined as Declined  # re-exported for the CLI
from flowdb.database.preconditions import check_plan
from flowdb.database.runner import print_sql, run_plan
from flowdb.database.runner import stamp as run_stamp
from flowdb.errors import (
    ChangedRevisionError,
    DatabaseReadOnlyError,
    DiskFullError,
    FlowdbError,
    ForeignDatabaseError,
    MigrationInProgressError,
    MigrationLockLostError,
    one_line_message,
)

if TYPE_CHECKING:
    from pathlib import Path

    from flowdb.database.fresh import Snapshot
    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database
    from flowdb.errors import FlowdbError

logger = logging.getLogger("flowdb.migrations")

#: The flag of ``upgrade`` that accepts revision files changed since they were applied.
ACCEPT_CHANGED_FLAG = "--accept-changed-revisions"

#: Called under the lock with the plan and the status; returns whether to go on.
Approval = Callable[["Plan", "SchemaStatus"], bool]


def migrate(
    database: Database,
    direction: Direction,
    revision: str,
    *,
    approve: Approval | None = None,
    use_snapshot: bool = True,
    accept_changed: bool = False,
    hold_contracts: bool = False,
) -> Plan:
    """Upgrade or downgrade ``database`` to ``revision``; return the plan that ran.

    An empty plan means there was nothing to do (logged); a plan ``approve`` refused
    is returned without running (check ``approved``). Validated before the lock: a
    revision that names nothing fails without touching the database.

    An empty database upgraded to head gets the head schema from the dialect's snapshot
    (``fresh``) unless ``use_snapshot`` is off; any other plan replays its revisions.
    An upgrade refuses a database where an applied revision's file has changed since
    (``ChangedRevisionError``) unless ``accept_changed``, which records the new files.
    With ``hold_contracts``, an upgrade stops before its first contract revision while
    replicas of an older release still serve (``fleet.hold_contracts``; ``Plan.held``).
    """

    planning.check_name(database.history, revision, allow_range=False)
    database.dialect.check_migratable()
    if direction == "downgrade" and not database.dialect.exists():
        # A database that does not exist has nothing to revert, and nothing to lock:
        # the lock file would be the only thing this command leaves behind.
        plan = planning.plan(database.history, direction, None, revision)
        logger.info(
            "Nothing to downgrade: the database is at base",
            extra={"event": Outcome("nothing to do")},
        )
        return plan
    with database.errors(), database.lock(direction):
        status = database.status()
        status.require_known(database)
        upgrade_bookkeeping(database, status)
        check_part_way(database, status, direction)
        plan = planning.plan(database.history, direction, status.current, revision)
        if hold_contracts:
            from flowdb.database.fleet import hold_contracts as hold

            plan = hold(database, plan)
        if plan.is_empty:
            logger.info(
                "Nothing to %s: the database is at %s",
                direction,
                status.current or "base",
                extra={"event": Outcome("nothing to do")},
            )
            return plan
        snapshot = fresh_snapshot(database, plan, status) if use_snapshot else None
        if snapshot is None:  # (an interrupted fresh install that resumes has its own tables)
            if direction == "upgrade":
                status = undo_interrupted_install(database, status)
            check_name_clashes(database, plan, status)
            if direction == "upgrade":
                check_applied_files(database, status, accept=accept_changed)
                check_plan(database, plan, status)  # data a migration cannot convert
        go_ahead(database, plan, status, approve, direction)
        if snapshot is None and use_snapshot and (reason := why_replay(database, plan, status)):
            replaying(reason)
        if snapshot is not None:
            from flowdb.database.fresh import install

            install(database, snapshot)
            return plan
        started, at = time.perf_counter(), journal.now()
        try:
            run_plan(database, plan)
        except MigrationLockLostError:
            raise  # the lock's new holder owns the database now: write nothing more
        except Exception as exc:
            record_failure(database, plan, at, time.perf_counter() - started, exc)
            placed = with_position(database, plan, exc)
            if placed is None:
                raise
            raise placed from exc
        return plan


def check_part_way(database: Database, status: SchemaStatus, direction: Direction) -> None:
    """Refuse a direction that cannot go on from a migration left part way through.

    An upgrade finishes a part-way upgrade; a downgrade finishes a part-way downgrade.
    The other direction, and either over a version row stamped after the migration
    stopped, would run on a schema the record does not describe: refused, naming the
    commands that resolve it (``partway.PartWay.way_out``).
    """

    found = part_way(status, database.history)
    if found is None:
        return
    goes_on = found.kind == "downgrade" if direction == "downgrade" else found.kind != "downgrade"
    if goes_on and not found.mismatched:
        return
    raise MigrationInProgressError(
        f"{found.describe()[:1].upper()}{found.describe()[1:]} on {database.describe()}, "
        f"so {direction} cannot start; nothing was changed: "
        f"{found.way_out()}."
    )


def go_ahead(
    database: Database,
    plan: Plan,
    status: SchemaStatus,
    approve: Approval | None,
    command: str,
) -> None:
    """Ask ``approve`` about ``plan``, then back the database up: the last thing before a change.

    Every command that changes the schema (upgrade, downgrade, stamp, drop and reset)
    calls this once, under the migration lock, so a declined plan writes nothing and an
    approved one is backed up (``backup.before_change``; on SQLite) before its first
    change. A backup that cannot be written raises and nothing is changed.
    """
    from flowdb.database.backup import before_change

    if approve is not None and not approve(plan, status):
        raise Declined(plan)
    before_change(database, status, command)


def upgrade_bookkeeping(database: Database, status: SchemaStatus) -> None:
    """Bring flowdb's own tables to their newest shape before anything writes them.

    The caller holds the migration lock. Only a database that has the run record is
    touched: without one, the run record is created in its newest shape when first
    written (a fresh install, on SQLite, imports no SQLAlchemy).
    """
    if journal.RUN_TABLE not in status.tables:
        return
    if status.bookkeeping is not None and status.bookkeeping >= bookkeeping.LATEST:
        return  # read with the status (SQLite): nothing to do, no SQLAlchemy to import
    engine = database.engine("flowdb-journal")
    try:
        with engine.begin() as connection:
            done = bookkeeping.upgrade(connection)
    finally:
        engine.dispose()
    for step in done:
        logger.info("Upgraded flowdb's own tables: step %d, %s", step.version, step.does)


def fresh_snapshot(database: Database, plan: Plan, status: SchemaStatus) -> Snapshot | None:
    """The snapshot that can install ``plan`` at once: an empty database going to head."""

    starts_empty = _empty(status) or resumes(database, status)
    if plan.direction != "upgrade" or not starts_empty or plan.is_empty:
        return None
    if plan.target != database.history.head:
        return None
    return usable_snapshot(database)


def why_replay(database: Database, plan: Plan, status: SchemaStatus) -> str | None:
    """Why an upgrade of an empty database replays the history (``fresh_snapshot`` gave none).

    Said once the plan is approved, just before the replay starts, so a refusal stays
    one line.
    """

    if plan.direction != "upgrade" or not _empty(status) or plan.is_empty:
        return None
    if plan.target != database.history.head:
        return (
            f"the snapshot installs the head ({database.history.head}) only, and "
            f"this upgrade goes to {plan.target or 'base'}"
        )
    return why_not_usable(database)


def _empty(status: SchemaStatus) -> bool:
    """Nothing of flowdb's there yet: no revision, no migration part way."""
    return status.owner == "empty" and status.current is None and not status.in_progress


def replaying(reason: str) -> None:
    """Say in one line why an empty database gets the history replayed, not the snapshot."""
    logger.info("Replaying the history instead of installing the snapshot: %s.", reason)


def undo_interrupted_install(database: Database, status: SchemaStatus) -> SchemaStatus:
    """Drop a killed fresh install that will not resume (no usable snapshot, other head).

    It ran on an empty database, so what it built is all its own; the replay that
    follows starts from empty again. Returns the status after.
    """

    if not fresh.interrupted(status):
        return status
    logger.warning("Dropping an interrupted fresh install before replaying the history")
    if not fresh.undo(database):
        from flowdb.errors import MigrationFailedError

        raise MigrationFailedError(
            f"An interrupted fresh install on {database.describe()} could not be dropped "
            "before replaying the history; nothing else was changed. Run the upgrade again."
        )
    return database.status()


def changed_files(database: Database, status: SchemaStatus) -> list[str]:
    """Applied revisions whose file differs from the one recorded when it was applied."""
    if status.current is None or not status.known or journal.RUN_TABLE not in status.tables:
        return []
    runs = journal.read_runs(database, status)
    return journal.changed_revisions(runs, database.history, status.current)


def check_applied_files(database: Database, status: SchemaStatus, *, accept: bool) -> None:
    """Refuse to build on a revision whose file changed after it was applied (Flyway's validate).

    With ``accept``, the changed files are recorded as the applied ones (``accept`` rows).
    """

    changed = changed_files(database, status)
    if not changed:
        return
    if not accept:
        first = database.history.get(changed[0])
        others = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ChangedRevisionError(
            f"Revision {first.id} ({first.path.name}){others} was applied to "
            f"{database.describe()} from a different file than this flowdb's; nothing was "
            f"changed. Check what differs; to accept it, run again with {ACCEPT_CHANGED_FLAG}."
        )
    at = journal.now()
    journal.record_apart(
        database,
        [
            journal.started(r, "accept", at, 0.0, file_hash=file_hash(database.history.get(r)))
            for r in changed
        ],
    )
    logger.warning("Accepted the changed file(s) of %s", ", ".join(changed))


def with_position(database: Database, plan: Plan, exc: Exception) -> FlowdbError | None:
    """``exc`` as a disk-full or not-writable error that says where the database stands.

    Such an error can strike after some migrations (or a data migration's phases) have
    committed, so "nothing was changed" would be untrue; the line says what committed.
    Other errors (``None``) keep their own words.
    """

    translated = translate(exc, database)
    if not isinstance(translated, DiskFullError | DatabaseReadOnlyError):
        return None
    return type(translated)(f"{str(translated).rstrip('.')}. {stands(database, plan)}")


def stands(database: Database, plan: Plan) -> str:
    """One sentence: how many of ``plan``'s steps committed and where the database is now."""

    try:
        status = database.status()
    except FlowdbError:
        return "Where the database stands could not be read; see 'flowdb database current'."
    steps = [step.id for step in plan.steps]
    current = status.current
    if plan.direction == "upgrade":
        done = steps.index(current) + 1 if current in steps else 0
    else:  # reverting steps[i] leaves the database at steps[i + 1] (or the target)
        done = steps.index(current) if current in steps else len(steps)
    part_way = status.describe_progress()
    return (
        f"{done} of the {len(steps)} migration(s) of this {plan.direction} committed; the "
        f"database is at {current or 'base'}"
        + (f", with {part_way} kept for the next run" if part_way else "")
        + "."
    )


def record_failure(database: Database, plan: Plan, at: str, elapsed: float, exc: Exception) -> None:
    """Record the step that failed (the one after where the database stayed), apart."""

    try:
        reached = database.status().current
    except FlowdbError:
        reached = plan.current
    history = database.history
    failed = plan.steps[0].id
    if plan.direction == "upgrade":
        done = history.position(reached) if reached is None or history.knows(reached) else 0
        later = [step.id for step in plan.steps if history.position(step.id) > done]
        failed = later[0] if later else failed
    elif reached is not None and reached in [step.id for step in plan.steps]:
        failed = reached

    translated = translate(exc, database) or exc
    run = journal.started(failed, plan.direction, at, elapsed, error=one_line_message(translated))
    journal.record_apart(database, [run])


def preview(database: Database, direction: Direction, revision: str) -> None:
    """Print the SQL ``direction`` to ``revision`` would run; write nothing, take no lock.

    A ``FROM:TO`` range needs no database. An empty database going to head prints the
    snapshot's SQL (what the fresh install runs). Otherwise the database's revision is read
    (waiting, with a report, for a migration that holds it), and a downgrade's SQL
    starts with comments saying which tables and columns it destroys.
    """

    text = planning.check_name(database.history, revision, allow_range=True)
    if planning.is_range(text):
        print_sql(database, planning.plan_range(database.history, direction, text))
        return

    try:
        status = database.status()
    except FlowdbError as exc:
        raise type(exc)(
            f"{exc} To preview SQL without a database, give an explicit range: -r FROM:TO "
            "(e.g. -r base:head)."
        ) from None
    status.require_known(database)
    plan = planning.plan(database.history, direction, status.current, text)
    snapshot = fresh_snapshot(database, plan, status)
    if snapshot is None:
        refuse_like_the_run(database, plan, status)
        if reason := why_replay(database, plan, status):
            replaying(reason)
    if snapshot is not None:
        import sys

        from flowdb.database.fresh import render

        sys.stdout.write(render(database, snapshot))
        sys.stdout.flush()
        return
    print_sql(database, plan, header=describe_plan(database, plan, status))


def refuse_like_the_run(database: Database, plan: Plan, status: SchemaStatus) -> None:
    """Refuse a preview where the real run would refuse before its first step (name clashes).

    A dry run that printed SQL and exited 0 would promise a run that cannot happen. An
    interrupted fresh install is not a clash: the real run drops it before replaying.
    """

    if plan.direction == "upgrade" and fresh.interrupted(status):
        return
    check_name_clashes(database, plan, status)


def describe_plan(database: Database, plan: Plan, status: SchemaStatus) -> list[str]:
    """Lines that say what ``plan`` does: its span, its steps, and what data it destroys."""

    if plan.is_empty:
        return []
    lines = [f"flowdb: {plan.describe()} on {database.describe()}"]
    verb = "applies" if plan.direction == "upgrade" else "reverts"
    lines += [f"  {verb} {step.id}  {step.title}" for step in plan.steps]
    if plan.direction == "downgrade":
        drops = downgrade_losses(database, plan, status)
        losses = [drop for drop in drops if drop.lost]
        moves = [drop for drop in drops if not drop.lost]
        if losses:
            lines.append("flowdb: data that will be lost:")
            lines += [f"  {loss.revision}: {loss.describe()}" for loss in losses]
        else:
            lines.append("flowdb: no rows or values are lost.")
        if moves:
            lines.append("flowdb: data that moves back (not lost):")
            lines += [f"  {move.revision}: {move.describe()}" for move in moves]
        dump = database.dialect.dump_command()
        if dump is not None:
            lines.append(f"flowdb: back it up first (flowdb does not): {dump}")
    return lines


def stamp(
    database: Database,
    revision: str,
    *,
    take_over: bool = False,
    approve: Approval | None = None,
) -> str | None:
    """Record ``revision`` as the database's revision without running any migration.

    Returns the revision stamped (``None``: base). ``take_over`` overwrites another
    application's version row.
    """

    target = planning.resolve(database.history, revision)
    database.dialect.check_migratable()
    with database.errors(), database.lock("stamp"):
        status = database.status()
        status.require_known(database, take_over=take_over)
        current = status.current if status.known else None
        check_stamp_over_part_way(database, status, target)
        plan = planning.Plan("upgrade", current, target, ())
        go_ahead(database, plan, status, approve, "stamp")
        run_stamp(database, target)
        record_stamp(database, target)
    return target


def check_stamp_over_part_way(database: Database, status: SchemaStatus, target: str | None) -> None:
    """Refuse a stamp that would record a revision a part-way migration's schema does not have.

    The one stamp allowed is the revision the part-way upgrade started from: it puts a
    version row that was moved after the kill back where the schema is.
    """

    found = part_way(status, database.history)
    if found is None or found.allows_stamp(target):
        return
    raise MigrationInProgressError(
        f"Cannot stamp {target or 'base'}: {found.describe()} on {database.describe()}, so "
        f"its schema is between two revisions; nothing was changed: "
        f"{found.way_out()}."
    )


def record_stamp(database: Database, target: str | None) -> None:
    """Record a stamp: each revision it declares applied, with its file's hash now."""

    at = journal.now()
    history = database.history
    runs = [
        journal.started(r.id, "stamp", at, 0.0, file_hash=file_hash(r), source=r)
        for r in history.revisions[: history.position(target)]
    ] or [journal.started("base", "stamp", at, 0.0)]
    engine = database.engine("flowdb-journal")
    try:
        with database.errors(), engine.begin() as connection:
            journal.record(connection, database, runs)
    finally:
        engine.dispose()


def make_snapshot(database: Database) -> Path:
    """Replay the history on the empty ``database`` and write its dialect's snapshot.

    For the people who add revisions (``flowdb database snapshot``); the database is
    left at head. A database with tables of its own is refused: the snapshot must hold
    exactly what the history builds.
    """

    status = database.status()
    status.require_known(database)
    if status.tables - BOOKKEEPING:
        where = database.describe()
        raise ForeignDatabaseError(
            f"{where[:1].upper()}{where[1:]} is not empty "
            f"({', '.join(sorted(status.tables))}); a "
            "snapshot must be made on an empty database: point FLOWDB_DATABASE_URL at a new one."
        )
    migrate(database, "upgrade", "head", use_snapshot=False)
    return write_snapshot(database)
