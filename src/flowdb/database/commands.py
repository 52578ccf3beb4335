"""The migration commands on a ``Database``: lock first, then look, plan, ask, run.

Every command that writes the schema takes the migration lock before it reads
anything, so a waiter always names the holder and honours the timeout, and the plan
it shows is the plan it runs. The steps under the lock:

1. read the status and refuse a database this flowdb cannot work with (newer, or
   another application's, unless ``take_over`` where the command allows it);
2. plan (``planning``): resolve the revision argument against the history;
3. check the plan against the database (name clashes before the first step);
4. ask: ``approve(plan, status)`` may show the plan (and what it destroys) and say
   no, which ends the command with nothing changed;
5. run the plan (``runner``): one transaction per migration.

The reference API (``alembic_commands``) and the CLI both call these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowdb.database import planning
from flowdb.database.events import Direction
from flowdb.errors import MigrationInProgressError

if TYPE_CHECKING:
    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.migrations")

#: Called under the lock with the plan and the status; returns whether to go on.
Approval = Callable[["Plan", "SchemaStatus"], bool]


def migrate(
    database: Database,
    direction: Direction,
    revision: str,
    *,
    approve: Approval | None = None,
) -> Plan:
    """Upgrade or downgrade ``database`` to ``revision``; return the plan that ran.

    An empty plan means there was nothing to do (logged); a plan ``approve`` refused
    is returned without running (check ``approved``). Validated before the lock: a
    revision that names nothing fails without touching the database.
    """
    from flowdb.database.impact import check_name_clashes
    from flowdb.database.runner import run_plan

    planning.check_name(database.history, revision, allow_range=False)
    database.dialect.check_migratable()
    if direction == "downgrade" and not database.dialect.exists():
        # A database that does not exist has nothing to revert, and nothing to lock:
        # the lock file would be the only thing this command leaves behind.
        plan = planning.plan(database.history, direction, None, revision)
        logger.info("Nothing to downgrade: the database is at base")
        return plan
    with database.errors(), database.lock(direction):
        status = database.status()
        status.require_known(database)
        if direction == "downgrade" and status.in_progress:
            raise MigrationInProgressError(
                f"Migration {status.describe_progress()} is part way through on "
                f"{database.describe()}; run 'flowdb database upgrade' to finish it first "
                "(its finished phases cannot be reverted on their own)."
            )
        plan = planning.plan(database.history, direction, status.current, revision)
        if plan.is_empty:
            logger.info("Nothing to %s: the database is at %s", direction, status.current or "base")
            return plan
        check_name_clashes(database, plan, status)
        if approve is not None and not approve(plan, status):
            raise Declined(plan)
        run_plan(database, plan)
        return plan


def preview(database: Database, direction: Direction, revision: str) -> None:
    """Print the SQL ``direction`` to ``revision`` would run; write nothing, take no lock.

    A ``FROM:TO`` range needs no database. Otherwise the database's revision is read
    (waiting, with a report, for a migration that holds it), and a downgrade's SQL
    starts with comments saying which tables and columns it destroys.
    """
    from flowdb.database.runner import print_sql

    text = planning.check_name(database.history, revision, allow_range=True)
    if planning.is_range(text):
        print_sql(database, planning.plan_range(database.history, direction, text))
        return
    from flowdb.errors import FlowdbError

    try:
        status = database.status()
    except FlowdbError as exc:
        raise type(exc)(
            f"{exc} To preview SQL without a database, give an explicit range: -r FROM:TO "
            "(e.g. -r base:head)."
        ) from None
    status.require_known(database)
    plan = planning.plan(database.history, direction, status.current, text)
    print_sql(database, plan, header=describe_plan(database, plan, status))


def describe_plan(database: Database, plan: Plan, status: SchemaStatus) -> list[str]:
    """Lines that say what ``plan`` does: its span, its steps, and what data it destroys."""
    from flowdb.database.impact import downgrade_losses

    if plan.is_empty:
        return []
    lines = [f"flowdb: {plan.describe()} on {database.describe()}"]
    verb = "applies" if plan.direction == "upgrade" else "reverts"
    lines += [f"  {verb} {step.id}  {step.title}" for step in plan.steps]
    if plan.direction == "downgrade":
        losses = downgrade_losses(database, plan, status)
        if losses:
            lines.append("flowdb: data that will be lost:")
            lines += [f"  {loss.revision}: {loss.describe()}" for loss in losses]
        else:
            lines.append("flowdb: no rows or values are lost.")
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
    from flowdb.database.runner import stamp as run_stamp

    target = planning.resolve(database.history, revision)
    database.dialect.check_migratable()
    with database.errors(), database.lock("stamp"):
        status = database.status()
        status.require_known(database, take_over=take_over)
        current = status.current if status.known else None
        plan = planning.Plan("upgrade", current, target, ())
        if approve is not None and not approve(plan, status):
            raise Declined(plan)
        run_stamp(database, target)
    return target


class Declined(Exception):
    """The user said no to a plan; nothing was changed."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(f"Declined: {plan.describe()}")
        self.plan = plan
