"""flowdb's history under Alembic's own CLI: ``alembic -c flowdb.ini current | upgrade | ...``.

When flowdb's runner drives Alembic it hands ``migrations/env.py`` a ready ``Database``
(``config.attributes["database"]``). When an operator runs the plain ``alembic`` command
with an ini written by ``write_ini`` nothing is handed over, so ``env.py`` asks this
module for a ``PlainRun``. It:

* builds the ``Database`` once, from the ini's ``sqlalchemy.url`` when set, else from
  flowdb's settings (``FLOWDB_DATABASE_URL``);
* around an online run that moves the database (upgrade, downgrade, stamp) holds flowdb's
  migration lock, so a plain ``alembic upgrade`` and a ``flowdb database upgrade`` never
  run at once, refuses a database flowdb cannot work with, and plans the run the way
  flowdb would (unknown revisions, a migration left part way, name clashes and changed
  revision files are refused before anything is written; a killed fresh install is
  dropped before the replay);
* records the run in flowdb's run record as flowdb does: each step with its file's hash,
  a failure apart, a stamp with the revisions it declares applied;
* turns flowdb's one-line errors into Alembic's ``CommandError``, which the ``alembic``
  command prints as one ``FAILED:`` line instead of a traceback.

Read-only runs (``current``, ``check``) and SQL previews (``--sql``) take no lock.
"""

from __future__ import annotations

import logging.config
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdb.database import journal, planning
from flowdb.database.commands import (
    check_applied_files,
    check_part_way,
    record_failure,
    record_stamp,
    undo_interrupted_install,
)
from flowdb.database.impact import check_name_clashes
from flowdb.database.preconditions import check_plan
from flowdb.database.runner import StepReporter, main_options
from flowdb.database.target import Database
from flowdb.errors import (
    FlowdbError,
    SchemaNotAtHeadError,
    UsageError,
)

if TYPE_CHECKING:
    from alembic.config import Config

    from flowdb.database.events import Direction
    from flowdb.database.planning import Plan
    from flowdb.database.target import Database

#: The commands that move the database; they run under the migration lock.
MOVING = frozenset({"upgrade", "downgrade", "stamp"})

#: The name the ini is written under when no path is given.
DEFAULT_INI = "alembic.ini"

_LOGGING = """
[loggers]
keys = root,alembic,flowdb

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[logger_flowdb]
level = INFO
handlers =
qualname = flowdb

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


def ini_text() -> str:
    """The ini Alembic's CLI needs for flowdb's history: the runner's options, plus logging."""

    options = "\n".join(f"{name} = {value}" for name, value in main_options().items())
    return (
        "# Alembic configuration for flowdb's migration history (flowdb database alembic-ini).\n"
        "# Use: alembic -c THIS_FILE current | history | heads | upgrade head | downgrade -1\n"
        "# The database is FLOWDB_DATABASE_URL (flowdb's settings) unless sqlalchemy.url is\n"
        "# set below. Upgrades, downgrades and stamps take flowdb's migration lock.\n"
        "\n[alembic]\n"
        f"{options}\n"
        "# sqlalchemy.url = postgresql://flowdb@db.example/flowdb\n" + _LOGGING
    )


def write_ini(path: Path, *, force: bool = False) -> Path:
    """Write the ini to ``path`` (a folder gets ``alembic.ini`` in it); return where it went.

    An existing file is kept unless ``force``: it may be another tool's configuration.
    """
    target = path / DEFAULT_INI if path.is_dir() else path
    if target.exists() and not force:
        raise UsageError(
            f"{target} exists already; nothing was written. Pass --force to overwrite it, or "
            "give another path."
        )
    if not target.parent.is_dir():
        raise UsageError(
            f"Cannot write {target}: the folder {target.parent} does not exist; create it or "
            "give another path."
        )
    try:
        target.write_text(ini_text(), encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"Cannot write {target} ({exc.strerror or exc}); give a path this user can write."
        ) from None
    return target.resolve()


@contextmanager
def alembic_errors() -> Iterator[None]:
    """Raise flowdb's one-line errors as ``CommandError``: the ``alembic`` CLI prints one line."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError:
        raise
    except FlowdbError as exc:
        raise CommandError(str(exc)) from exc


def _command_name(config: Config, options: dict[str, Any]) -> str | None:
    """Which Alembic command runs env.py: the CLI's parsed command, else the command's function."""
    from flowdb.database.alembic_internals import cli_function

    name = getattr(cli_function(config), "__name__", None)
    if name is None:
        name = getattr(options.get("fn"), "__name__", None)
    return "stamp" if name == "do_stamp" else name


class PlainRun:
    """One run of env.py by the plain ``alembic`` command: its database and what it does."""

    def __init__(self, config: Config, database: Database, command: str | None, revision: Any):
        self.config = config
        self.database = database
        self.command = command
        self.revision = revision

    @classmethod
    def start(cls, config: Config, context: Any) -> PlainRun:
        """Build the run's ``Database`` (ini URL, else settings) and set up logging and steps."""

        if config.config_file_name and "loggers" in config.file_config.sections():
            logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
        with alembic_errors():
            url = config.get_main_option("sqlalchemy.url")
            database = Database.from_url(url) if url else Database.from_settings()
        from flowdb.database.alembic_internals import environment_options

        options = environment_options(context)
        run = cls(config, database, _command_name(config, options), options.get("destination_rev"))
        # Where migrations look for the Database (restartable DDL); marked as plain, so a
        # Config reused for another command builds a fresh one.
        config.attributes["database"] = database
        config.attributes["flowdb_plain_run"] = True
        config.attributes.pop("on_step", None)
        if run.command in ("upgrade", "downgrade") and not context.is_offline_mode():
            config.attributes["on_step"] = StepReporter(database)
        return run

    @property
    def moves(self) -> bool:
        """Whether the run may change the database (anything with a target but a preview)."""
        return self.command in MOVING or (self.command is None and self.revision is not None)

    @contextmanager
    def online(self) -> Iterator[bool]:
        """Hold the migration lock around a run that moves the database; check and record it.

        Yields whether to run: a read (``current``) of a database that does not exist yet
        is base without creating it (as ``flowdb database current`` reads).
        """

        if not self.moves:
            with alembic_errors(), self.database.errors():
                yield self._readable()
            return
        with (
            alembic_errors(),
            self.database.errors(),
            self.database.lock(f"alembic-{self.command or 'command'}"),
        ):
            status = self.database.status()
            status.require_known(self.database)
            if self.command == "stamp":
                from flowdb.database.planning import stamp_target

                stamp_target(self.database.history, self.revision)
            if self.command not in ("upgrade", "downgrade"):
                yield True
                if self.command == "stamp":
                    record_stamp(self.database, self.database.status().current)
                return
            direction: Direction = "upgrade" if self.command == "upgrade" else "downgrade"
            check_part_way(self.database, status, direction)
            if self.command == "upgrade":
                status = undo_interrupted_install(self.database, status)
            plan = self._plan(status.current)
            if self.command == "upgrade":
                check_name_clashes(self.database, plan, status)
                check_applied_files(self.database, status, accept=False)
                check_plan(self.database, plan, status)  # data a migration cannot convert
            self.config.attributes["direction"] = plan.direction  # for rerunnable DDL (MySQL)
            self.config.attributes["target"] = plan.target
            started, at = time.perf_counter(), journal.now()
            try:
                yield True
            except Exception as exc:
                if not plan.is_empty:
                    record_failure(self.database, plan, at, time.perf_counter() - started, exc)
                raise

    def _readable(self) -> bool:
        """Whether a read-only run should connect: ``current`` and ``check`` create nothing."""
        if self.command not in ("current", "check") or self.database.dialect.exists():
            return True
        if self.command == "current":
            return False  # nothing applied: Alembic prints nothing for base
        raise SchemaNotAtHeadError(
            f"{self.database.describe()[:1].upper()}{self.database.describe()[1:]} does not "
            "exist yet, so every table of the models is missing; run 'alembic upgrade head' "
            "(or 'flowdb database upgrade') to create it."
        )

    def _plan(self, current: str | None) -> Plan:

        direction: Direction = "upgrade" if self.command == "upgrade" else "downgrade"
        return planning.plan(self.database.history, direction, current, str(self.revision))
