"""Running a plan with Alembic: the only module that drives ``alembic.command``.

Alembic is imported inside the functions, so importing this module stays cheap.
Callers hold the migration lock (``Database.lock``) while a plan runs; the preview
(``print_sql``) writes nothing and needs no lock.
"""

from __future__ import annotations

import io
import logging
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from flowdb.database import history, journal
from flowdb.database.dialects.base import first_line
from flowdb.database.events import Outcome, StepDone
from flowdb.database.fingerprints import file_hash
from flowdb.errors import DatabaseUnreachableError, FlowdbError, MigrationBlockedError

if TYPE_CHECKING:
    from alembic.config import Config

    from flowdb.database.planning import Plan
    from flowdb.database.target import Database

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"

logger = logging.getLogger("flowdb.migrations")


def main_options() -> dict[str, str]:
    """The ``[alembic]`` options of flowdb's history, as an ini file writes them.

    One list for the runner's ``Config`` and the ini of ``flowdb database alembic-ini``,
    so Alembic's own CLI sees the history exactly as flowdb does.
    """

    return {
        "script_location": str(history.MIGRATIONS_FOLDER),
        "file_template": FILE_TEMPLATE,
        "truncate_slug_length": "60",
    }


def alembic_config(
    database: Database, *, output: TextIO | None = None, report_steps: bool = True
) -> Config:
    """An Alembic ``Config`` for flowdb's migrations on ``database``.

    ``env.py`` finds the ``Database`` in ``config.attributes["database"]`` and the step
    reporter (``None`` for previews, which apply nothing) in ``["on_step"]``.
    """
    from alembic.config import Config

    stream = output if output is not None else sys.stdout
    config = Config(output_buffer=stream, stdout=stream)
    for name, value in main_options().items():
        config.set_main_option(name, value)
    config.attributes["database"] = database
    config.attributes["on_step"] = StepReporter(database) if report_steps else None
    return config


def run_plan(database: Database, plan: Plan) -> None:
    """Apply or revert the plan's migrations, one transaction each; the caller holds the lock.

    A step that gives up waiting for a table lock (``FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT``)
    has rolled back its transaction; the plan is run again from where it stopped after
    a back-off (0.5 s doubling up to 10 s), at most ``FLOWDB_MIGRATION_LOCK_RETRIES``
    times, then fails closed naming the session in the way. Every attempt runs under the
    lock timeout: there is never a last try that could queue behind a long transaction.
    """
    from alembic import command

    if plan.is_empty:
        return
    config = alembic_config(database)
    config.attributes["direction"] = plan.direction  # for rerunnable DDL (MySQL)
    config.attributes["target"] = plan.target
    run = command.upgrade if plan.direction == "upgrade" else command.downgrade
    retries = database.settings.migration_lock_retries
    with _connection_loss_says_where(database, plan, config), database.errors():
        for attempt in range(retries + 1):
            try:
                run(config, plan.target or "base")
                return
            except Exception as exc:
                if not database.dialect.is_lock_timeout(exc):
                    raise
                if attempt == retries:
                    raise _blocked(database, plan, attempt + 1) from exc
                pause = min(0.5 * 2**attempt, 10.0) * random.uniform(0.8, 1.2)
                logger.warning(
                    "A table lock was not granted within %g s; retrying in %.1f s "
                    "(attempt %d of %d)",
                    database.settings.migration_ddl_lock_timeout,
                    pause,
                    attempt + 2,
                    retries + 1,
                )
                time.sleep(pause)


@contextmanager
def _connection_loss_says_where(database: Database, plan: Plan, config: Config) -> Iterator[None]:
    """A migration connection that failed part way: say where the database stands.

    The translated line would only say "cannot connect"; the revision that completed
    last is read again on a new connection, or, when the server does not answer,
    the last step this command saw complete is named as such.
    """
    try:
        yield
    except DatabaseUnreachableError as exc:
        reporter = config.attributes.get("on_step")
        try:
            status = database.status()
        except FlowdbError:
            last = reporter.last_step if isinstance(reporter, StepReporter) else None
            where = (
                f"unknown: the server did not answer. The last step this command saw "
                f"complete was {last or 'none'}; see 'flowdb database current' when it is back"
            )
        else:
            part_way = status.describe_progress()
            where = (status.current or "base") + (
                f", with {part_way} kept for the next run" if part_way else ""
            )
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise DatabaseUnreachableError(
            f"The {plan.direction} of {database.describe()} lost its connection "
            f"({first_line(cause)}); the database stays at {where}. Check that the server "
            "is running and run the command again."
        ) from exc


def _blocked(database: Database, plan: Plan, attempts: int) -> MigrationBlockedError:
    """The fail-closed error: who is in the way, where the database stays, what to do."""
    engine = database.engine("flowdb-blockers")
    try:
        with engine.connect() as connection:
            blocker = database.dialect.describe_blockers(connection, database.history.all_tables)
            status = database.status()
    finally:
        engine.dispose()
    part_way = status.describe_progress()
    where = status.current or "base"
    return MigrationBlockedError(
        f"The {plan.direction} could not take a table lock within "
        f"{database.settings.migration_ddl_lock_timeout:g} s in {attempts} attempts; it is "
        f"blocked by {blocker}. The database stays at {where}"
        + (f", with {part_way} kept for the next run" if part_way else "")
        + "; let that transaction finish (or end it) and run the command again."
    )


def render_sql(database: Database, plan: Plan, output: TextIO, *, dialect_url: Any = None) -> None:
    """Write the SQL of ``plan`` to ``output`` (Alembic's offline mode); touch no database.

    ``dialect_url`` renders for another dialect than the database's (the loss report
    reads PostgreSQL's plain ``DROP COLUMN`` instead of SQLite's table copies).
    """
    from alembic import command

    if plan.is_empty:
        return
    config = alembic_config(database, output=output, report_steps=False)
    if dialect_url is not None:
        config.attributes["offline_url"] = dialect_url
    with database.errors():
        if plan.direction == "upgrade":
            command.upgrade(config, plan.span, sql=True)
        else:
            command.downgrade(config, plan.span, sql=True)


def print_sql(database: Database, plan: Plan, header: list[str] | None = None) -> None:
    """Print ``header`` lines as SQL comments, then the plan's SQL, on stdout, all at once.

    Rendered into a buffer first, so that concurrent previews never interleave.
    """
    buffer = io.StringIO()
    for line in header or []:
        buffer.write(f"-- {line}\n")
    if plan.is_empty:
        buffer.write(
            f"-- Nothing to {plan.direction}: the database is at {plan.current or 'base'}.\n"
        )
    else:
        render_sql(database, plan, buffer)
    sys.stdout.write(buffer.getvalue())
    sys.stdout.flush()


def stamp(database: Database, target: str | None) -> None:
    """Record ``target`` as the database's only revision, running nothing; lock held."""
    from alembic import command

    with database.errors():
        command.stamp(alembic_config(database), revision=target or "base", purge=True)
    logger.info("Stamped the database at %s", target or "base", extra={"event": Outcome("stamped")})


class StepReporter:
    """Alembic ``on_version_apply`` callback: logs each applied migration with its duration.

    Each step is also written to flowdb's run record (``journal``) on the step's own
    connection, so the row commits exactly when the step does.
    """

    def __init__(self, database: Database | None = None) -> None:
        self.database = database
        self.count = 0
        #: The revision of the last step reported (applied, or reverted), if any.
        self.last_step: str | None = None
        self.last = time.perf_counter()
        self.started_at = journal.now()

    def __call__(self, *, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        """Log the step that just committed as a ``StepDone`` event."""
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.count += 1
        revision = step.up_revision_id  # the revision applied, or the one reverted
        self.last_step = revision
        title = (step.up_revision.doc or "").strip().splitlines()[0] if step.up_revision else ""
        event = StepDone(
            direction="upgrade" if step.is_upgrade else "downgrade",
            revision=revision,
            title=title,
            elapsed=elapsed,
        )
        if self.database is not None and not getattr(step, "is_stamp", False):
            self._record(ctx, event)  # stamps are recorded by commands.stamp, with hashes
        self.started_at = journal.now()
        logger.info(
            "%s %s %s (%.2f s)",
            "Applied" if step.is_upgrade else "Reverted",
            revision,
            title,
            elapsed,
            extra={"event": event},
        )

    def _record(self, ctx: Any, event: StepDone) -> None:

        assert self.database is not None
        history = self.database.history
        source = history.get(event.revision) if history.knows(event.revision) else None
        run = journal.started(
            event.revision,
            event.direction,
            self.started_at,
            event.elapsed or 0.0,
            file_hash=file_hash(source) if source else None,
            source=source,
        )
        journal.record(ctx.connection, self.database, [run])
