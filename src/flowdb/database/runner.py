"""Running a plan with Alembic: the only module that drives ``alembic.command``.

Alembic is imported inside the functions, so importing this module stays cheap.
Callers hold the migration lock (``Database.lock``) while a plan runs; the preview
(``print_sql``) writes nothing and needs no lock.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from flowdb.database.events import StepDone

if TYPE_CHECKING:
    from alembic.config import Config

    from flowdb.database.planning import Plan
    from flowdb.database.target import Database

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"

logger = logging.getLogger("flowdb.migrations")


def alembic_config(
    database: Database, *, output: TextIO | None = None, report_steps: bool = True
) -> Config:
    """An Alembic ``Config`` for flowdb's migrations on ``database``.

    ``env.py`` finds the ``Database`` in ``config.attributes["database"]`` and the step
    reporter (``None`` for previews, which apply nothing) in ``["on_step"]``.
    """
    from alembic.config import Config

    from flowdb.database import history

    stream = output if output is not None else sys.stdout
    config = Config(output_buffer=stream, stdout=stream)
    config.set_main_option("script_location", str(history.MIGRATIONS_FOLDER))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("truncate_slug_length", "60")
    config.attributes["database"] = database
    config.attributes["on_step"] = StepReporter() if report_steps else None
    return config


def run_plan(database: Database, plan: Plan) -> None:
    """Apply or revert the plan's migrations, one transaction each; the caller holds the lock."""
    from alembic import command

    if plan.is_empty:
        return
    config = alembic_config(database)
    started = time.perf_counter()
    with database.errors():
        if plan.direction == "upgrade":
            command.upgrade(config, plan.target or "base")
        else:
            command.downgrade(config, plan.target or "base")
    reporter: StepReporter = config.attributes["on_step"]
    logger.debug(
        "%s finished: %d migration(s) in %.2f s",
        plan.direction.capitalize(),
        reporter.count,
        time.perf_counter() - started,
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
    logger.info("Stamped the database at %s", target or "base")


class StepReporter:
    """Alembic ``on_version_apply`` callback: logs each applied migration with its duration."""

    def __init__(self) -> None:
        self.count = 0
        self.last = time.perf_counter()

    def __call__(self, *, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        """Log the step that just committed as a ``StepDone`` event."""
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.count += 1
        revision = step.up_revision_id  # the revision applied, or the one reverted
        title = (step.up_revision.doc or "").strip().splitlines()[0] if step.up_revision else ""
        event = StepDone(
            direction="upgrade" if step.is_upgrade else "downgrade",
            revision=revision,
            title=title,
            elapsed=elapsed,
        )
        logger.info(
            "%s %s %s (%.2f s)",
            "Applied" if step.is_upgrade else "Reverted",
            revision,
            title,
            elapsed,
            extra={"event": event},
        )
