"""The reference migration API (upgrade, downgrade, revision, stamp), made safe.

The public functions keep the reference's names, signatures, defaults and meaning;
``dry_run=True`` prints the SQL on stdout (Alembic offline mode) and writes nothing.
Each is a thin wrapper: it builds a ``Database`` from the settings (read once) and
hands it to ``commands``, which validates the revision before touching anything, holds
the cross-process migration lock for the whole run, runs each migration in its own
transaction and reports each step on the ``flowdb.migrations`` logger.

Alembic is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flowdb.database import commands, planning
from flowdb.database.authoring import create_revision
from flowdb.database.history import MIGRATIONS_FOLDER
from flowdb.database.runner import alembic_config as config_for
from flowdb.database.target import Database

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "ALEMBIC_LOCK",
    "MIGRATIONS_FOLDER",
    "alembic_config",
    "alembic_downgrade",
    "alembic_revision",
    "alembic_stamp",
    "alembic_upgrade",
    "with_alembic_lock",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Serialises Alembic commands inside this process: Alembic's ``context`` and ``op``
#: are module-level proxies that two concurrent commands would overwrite. Re-entrant,
#: so a command may call another.
ALEMBIC_LOCK = threading.RLock()


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
    """An Alembic ``Config`` for flowdb's migrations and the configured database."""

    return config_for(Database.from_settings())


@with_alembic_lock
def alembic_upgrade(revision: str = "head", dry_run: bool = False) -> None:
    """Upgrade the database to ``revision`` (default ``"head"``, the newest).

    Args:
        revision: the target: a revision id (or a unique prefix of 4+ characters),
            ``"head"``, or a relative step such as ``"+1"``. With ``dry_run``,
            ``"FROM:TO"`` is accepted too.
        dry_run: print the SQL of the migrations on stdout instead of running them; the
            database is only read (for its current revision), never written.
    """
    database = Database.from_settings()
    if dry_run:
        commands.preview(database, "upgrade", revision)
    else:
        commands.migrate(database, "upgrade", revision)


@with_alembic_lock
def alembic_downgrade(revision: str = "-1", dry_run: bool = False) -> None:
    """Downgrade the database to ``revision`` (default ``"-1"``: one revision back).

    Args:
        revision: the target: a revision id (or a unique prefix of 4+ characters),
            ``"base"`` (remove every table), or a relative step such as ``"-2"``. With
            ``dry_run``, ``"FROM:TO"`` is accepted too.
        dry_run: print the SQL of the migrations on stdout instead of running them,
            preceded by comments naming the tables and columns it would destroy; the
            current revision is read from the database (never written).
    """
    database = Database.from_settings()
    if dry_run:
        commands.preview(database, "downgrade", revision)
    else:
        commands.migrate(database, "downgrade", revision)


@with_alembic_lock
def alembic_revision(message: str | None = None, autogenerate: bool = False, **kwargs: Any) -> None:
    """Create a new revision file in flowdb's migration history.

    Args:
        message: what the revision does; becomes its docstring and file name.
        autogenerate: compare the models with the database (which must be at head) and
            write the differences as operations, to be reviewed by hand.
        **kwargs: passed through to ``alembic.command.revision`` (e.g. ``rev_id``).
    """

    create_revision(Database.from_settings(), message, autogenerate, **kwargs)


@with_alembic_lock
def alembic_stamp(revision: str | list[str] | tuple[str, ...]) -> None:
    """Record ``revision`` as the database's revision without running any migration.

    Args:
        revision: a revision id (or a unique prefix of 4+ characters), ``"head"`` or
            ``"base"``; or, as Alembic's stamp takes, a list or tuple of them. flowdb's
            history has one branch, so the items must all name the same revision
            (each is validated); items naming different revisions are refused with
            ``UnknownRevisionError`` and nothing is written.
    """
    database = Database.from_settings()
    commands.stamp(database, planning.stamp_target(database.history, revision))
