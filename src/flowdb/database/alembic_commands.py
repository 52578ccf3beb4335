"""Migration commands: the reference API (upgrade, downgrade, revision, stamp), made safe.

The four public commands keep the reference's names, signatures, defaults and meaning;
``dry_run=True`` prints the SQL on stdout (Alembic offline mode) and writes nothing.
On top of the reference, every command that writes the schema

* validates its revision against the shipped history first, so bad input fails with
  one clear ``FlowdbError`` and leaves the database as it was;
* holds the cross-process migration lock (``locking``) for its whole run, so any
  number of threads, processes and replicas may call it at once;
* runs each migration in its own transaction (see ``migrations/env.py``);
* reports each applied migration on the ``flowdb.migrations`` logger.

Alembic is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flowdb.database.engines import translated_errors
from flowdb.database.history import History, load_history
from flowdb.database.locking import migration_lock
from flowdb.database.status import require_known_revision, schema_status
from flowdb.database.urls import DatabaseUrl, configured_database_url
from flowdb.errors import (
    DowngradeBelowBaseError,
    FlowdbError,
    InvalidRevisionMessageError,
    MigrationFailedError,
    UnknownRevisionError,
)

if TYPE_CHECKING:
    from alembic.config import Config

P = ParamSpec("P")
R = TypeVar("R")

MIGRATIONS_FOLDER = Path(__file__).parent / "migrations"
FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"

#: Serialises Alembic commands inside this process: Alembic's ``context`` and ``op``
#: are module-level proxies that two concurrent commands would overwrite. Re-entrant,
#: so a command may call another.
ALEMBIC_LOCK = threading.RLock()

logger = logging.getLogger("flowdb.migrations")


def with_alembic_lock(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator that runs ``fn`` while holding the process-wide Alembic lock.

    Alembic keeps the running migration context in module globals, so two threads
    running commands at once corrupt each other (``KeyError: 'config'``). The lock is
    re-entrant: nested or recursive calls from the same thread do not deadlock.
    """

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with ALEMBIC_LOCK:
            return fn(*args, **kwargs)

    return wrapper


def alembic_config() -> Config:
    """An Alembic ``Config`` for flowdb's migrations and the configured database URL."""
    from alembic.config import Config

    database = configured_database_url()
    config = Config(output_buffer=sys.stdout, stdout=sys.stdout)
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("truncate_slug_length", "60")
    config.attributes["database"] = database
    config.attributes["on_step"] = _StepReporter()
    return config


@with_alembic_lock
def alembic_upgrade(revision: str = "head", dry_run: bool = False) -> None:
    """Upgrade the database to ``revision`` (default ``"head"``, the newest).

    Args:
        revision: the target: a revision id (or unique prefix), ``"head"``, or a relative
            step such as ``"+1"``. With ``dry_run``, ``"FROM:TO"`` is accepted too.
        dry_run: print the SQL of the migrations on stdout instead of running them; the
            database is only read (for its current revision), never written.
    """
    database = configured_database_url()
    history = load_history()
    if dry_run:
        _print_sql("upgrade", database, history, revision)
        return
    with _translated_errors(database), migration_lock(database, "upgrade"):
        status = schema_status(database, history)
        require_known_revision(status, database)
        target = _resolve_upgrade_target(history, status.current, revision)
        if history.position(target) <= history.position(status.current):
            logger.info(
                "Nothing to upgrade: the database is at %s",
                status.current or "base",
                extra={"revision": status.current},
            )
            return
        assert target is not None  # it is ahead of the current revision, so not base
        _run_alembic("upgrade", target)


@with_alembic_lock
def alembic_downgrade(revision: str = "-1", dry_run: bool = False) -> None:
    """Downgrade the database to ``revision`` (default ``"-1"``: one revision back).

    Args:
        revision: the target: a revision id (or unique prefix), ``"base"`` (remove every
            table), or a relative step such as ``"-2"``. With ``dry_run``, ``"FROM:TO"``
            is accepted too.
        dry_run: print the SQL of the migrations on stdout instead of running them; the
            current revision is read from the database (never written) to know where
            the downgrade would start.
    """
    database = configured_database_url()
    history = load_history()
    if dry_run:
        _print_sql("downgrade", database, history, revision)
        return
    with _translated_errors(database), migration_lock(database, "downgrade"):
        status = schema_status(database, history)
        require_known_revision(status, database)
        target = _resolve_downgrade_target(history, status.current, revision)
        if target == status.current:
            logger.info("Nothing to downgrade: the database is at %s", status.current or "base")
            return
        _run_alembic("downgrade", target or "base")


@with_alembic_lock
def alembic_revision(message: str | None = None, autogenerate: bool = False, **kwargs: Any) -> None:
    """Create a new revision file in flowdb's migration history.

    Args:
        message: what the revision does; becomes its docstring and file name.
        autogenerate: compare the models with the database (which must be at head) and
            write the differences as operations, to be reviewed by hand.
        **kwargs: passed through to ``alembic.command.revision`` (e.g. ``rev_id``).
    """
    if message is not None and not message.strip():
        raise InvalidRevisionMessageError(
            "The revision message is empty; describe the change, e.g. -m 'add flow_run.priority'."
        )
    from alembic import command

    config = alembic_config()
    database: DatabaseUrl = config.attributes["database"]
    with _translated_errors(database):
        command.revision(config, message=message, autogenerate=autogenerate, **kwargs)
    load_history.cache_clear()


@with_alembic_lock
def alembic_stamp(revision: str) -> None:
    """Record ``revision`` as the database's revision without running any migration.

    Args:
        revision: a revision id (or unique prefix), ``"head"`` or ``"base"``.
    """
    database = configured_database_url()
    history = load_history()
    target = _resolve_absolute(history, revision)
    with _translated_errors(database), migration_lock(database, "stamp"):
        from alembic import command

        command.stamp(alembic_config(), revision=target or "base", purge=True)
    logger.info("Stamped the database at %s", target or "base", extra={"revision": target})


# --- revision resolution -------------------------------------------------------------


def _resolve_absolute(history: History, revision: str) -> str | None:
    """Resolve ``head``, ``base``, an id or a unique id prefix to an id (``None`` = base)."""
    text = revision.strip()
    if text in ("head", "heads"):
        return history.head
    if text == "base":
        return None
    matches = [r.id for r in history.revisions if r.id.startswith(text)] if text else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownRevisionError(
            f"Revision {revision!r} is ambiguous ({', '.join(matches)}); give more characters "
            "of the id."
        )
    raise UnknownRevisionError(
        f"Revision {revision!r} is not in flowdb's migration history; run "
        "'flowdb database history' to list the revisions."
    )


def _relative_steps(revision: str) -> int | None:
    text = revision.strip()
    if len(text) > 1 and text[0] in "+-" and text[1:].isdigit():
        return int(text)
    return None


def _resolve_upgrade_target(history: History, current: str | None, revision: str) -> str | None:
    steps = _relative_steps(revision)
    if steps is None:
        return _resolve_absolute(history, revision)
    if steps < 0:
        raise UnknownRevisionError(
            f"Upgrade cannot go back {revision}; use 'flowdb database downgrade -r {revision}'."
        )
    position = history.position(current) + steps
    if position > len(history.revisions):
        available = len(history.revisions) - history.position(current)
        raise UnknownRevisionError(
            f"Cannot upgrade {revision}: only {available} revision(s) lie between the database "
            "and head; use 'head' or a smaller step."
        )
    return history.revisions[position - 1].id if position else None


def _resolve_downgrade_target(history: History, current: str | None, revision: str) -> str | None:
    steps = _relative_steps(revision)
    where = current or "base"
    if steps is not None:
        if steps > 0:
            raise UnknownRevisionError(
                f"Downgrade cannot go forward {revision}; "
                f"use 'flowdb database upgrade -r {revision}'."
            )
        position = history.position(current) + steps
        if position < 0:
            fix = (
                "use -r base to remove them all"
                if current
                else "the database is empty, so there is nothing to downgrade"
            )
            raise DowngradeBelowBaseError(
                f"Cannot downgrade {revision} from {where}: only {history.position(current)} "
                f"revision(s) are applied; {fix}."
            )
        return history.revisions[position - 1].id if position else None
    target = _resolve_absolute(history, revision)
    if history.position(target) > history.position(current):
        raise UnknownRevisionError(
            f"Revision {target} is newer than the database's revision {where}, so there is "
            f"nothing to downgrade to; use 'flowdb database upgrade -r {target}'."
        )
    return target


# --- running and previewing ------------------------------------------------------------


def _run_alembic(direction: str, target: str) -> None:
    from alembic import command

    config = alembic_config()
    started = time.perf_counter()
    getattr(command, direction)(config, target)
    reporter: _StepReporter = config.attributes["on_step"]
    logger.info(
        "%s finished: %d migration(s) in %.2f s",
        direction.capitalize(),
        reporter.count,
        time.perf_counter() - started,
        extra={"applied": reporter.count},
    )


def _print_sql(direction: str, database: DatabaseUrl, history: History, revision: str) -> None:
    """Print the SQL of an upgrade or downgrade (Alembic offline mode); never write.

    An explicit ``FROM:TO`` range needs no database. Otherwise the database's current
    revision is read, so the preview shows exactly what the command would run.
    """
    from alembic import command

    start, _, end = revision.partition(":")
    if end:
        _resolve_absolute(history, start)
        _resolve_absolute(history, end)
        span: str | None = revision
    else:
        status = _status_for_preview(database, history)
        span = _preview_span(direction, history, status.current, revision)
        if span is None:
            print(f"-- Nothing to {direction}: the database is at {status.current or 'base'}.")
            return
    with _translated_errors(database):
        getattr(command, direction)(_preview_config(), span, sql=True)


def _preview_span(
    direction: str, history: History, current: str | None, revision: str
) -> str | None:
    """The ``FROM:TO`` range Alembic needs offline, or ``None`` when there is nothing to do."""
    if direction == "upgrade":
        target = _resolve_upgrade_target(history, current, revision)
        if history.position(target) <= history.position(current):
            return None
        return f"{current}:{target}" if current else str(target)
    target = _resolve_downgrade_target(history, current, revision)
    if target == current:
        return None
    return f"{current}:{target or 'base'}"


def _preview_config() -> Config:
    """The config for a dry-run: nothing is applied, so nothing is reported as applied."""
    config = alembic_config()
    config.attributes["on_step"] = None
    return config


def _status_for_preview(database: DatabaseUrl, history: History) -> Any:
    try:
        status = schema_status(database, history)
    except FlowdbError as exc:
        raise type(exc)(
            f"{exc} To preview SQL without a database, give an explicit range: -r FROM:TO "
            "(e.g. -r base:head)."
        ) from None
    require_known_revision(status, database)
    return status


@contextmanager
def _translated_errors(database: DatabaseUrl) -> Iterator[None]:
    """Turn Alembic's and the driver's errors into one-line ``FlowdbError``s."""
    from alembic.util import CommandError

    try:
        with translated_errors(database):
            yield
    except CommandError as exc:
        raise MigrationFailedError(f"{exc}.") from exc


class _StepReporter:
    """Alembic ``on_version_apply`` callback: logs each applied migration with its duration."""

    def __init__(self) -> None:
        self.count = 0
        self.last = time.perf_counter()

    def __call__(self, *, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.count += 1
        revision = step.up_revision_id  # the revision applied, or the one reverted
        direction = "upgrade" if step.is_upgrade else "downgrade"
        title = (step.up_revision.doc or "").strip().splitlines()[0] if step.up_revision else ""
        logger.info(
            "%s %s %s (%.2f s)",
            "Applied" if step.is_upgrade else "Reverted",
            revision,
            title,
            elapsed,
            extra={
                "direction": direction,
                "revision": revision,
                "title": title,
                "elapsed": elapsed,
            },
        )
