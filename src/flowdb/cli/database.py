"""``flowdb database ...``: move the database along its migration history.

Longer than 400 lines: one Typer function per command with its options, in one list.

Each command builds one ``Database`` from the settings and hands it to the database
layer; commands that change the schema take the migration lock first, then plan, show
the plan (and what a downgrade destroys), ask, and run it. Commands import the
database layer when they run, never at import time, so that ``flowdb --help`` does not
pay for SQLAlchemy or Alembic.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import typer

from flowdb.cli import json_output
from flowdb.cli.current_view import applied_info as _applied_info
from flowdb.cli.migrating import approval as _approval
from flowdb.cli.migrating import declined as _declined
from flowdb.cli.migrating import migrate as _migrate
from flowdb.cli.migrating import no_dry_run_json as _no_dry_run_json
from flowdb.cli.migrating import open_database as _database
from flowdb.cli.migrating import say as _say
from flowdb.cli.migrating import show_result as _show
from flowdb.cli.migrating import upgrade as upgrade_command
from flowdb.cli.output import (
    confirm_or_refuse,
    escape,
    migration_report,
    result,
    stdout_console,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus

database_app = typer.Typer(
    help="Create, upgrade, downgrade and inspect the database.\n\n"
    "Every command works on the database named by FLOWDB_DATABASE_URL (default: the "
    "SQLite file flowdb.db in FLOWDB_HOME, ~/.flowdb).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
_DRY_RUN = typer.Option(
    False, "--dry-run", help="Print the SQL on stdout instead of running it; writes nothing."
)
_TAKE_OVER = typer.Option(
    False,
    "--take-over-foreign-database",
    help="Act even on a database that belongs to another application: its alembic_version "
    "and its tables with flowdb's names are overwritten or dropped.",
)
_JSON = typer.Option(
    False, "--json", help="Print the result as one JSON document on stdout (for scripts)."
)


@database_app.command()
def upgrade(
    revision: str = typer.Option(
        "head",
        "--revision",
        "-r",
        metavar="REV",
        help="Where to go: head (default), a revision id (4+ characters), +N steps; "
        "with --dry-run also FROM:TO, e.g. base:head.",
    ),
    yes: bool = _YES,
    dry_run: bool = _DRY_RUN,
    accept_changed: bool = typer.Option(
        False,
        "--accept-changed-revisions",
        help="Go on although an applied revision's file changed since it was applied, and "
        "record the new file as the applied one.",
    ),
    contract_now: bool = typer.Option(
        False,
        "--contract-now",
        help="Run contract revisions although replicas of an older release still serve "
        "(they break); by default the upgrade stops before the first one.",
    ),
    as_json: bool = _JSON,
) -> None:
    """Upgrade the database to a revision (default: head, the newest).

    An empty database upgraded to head gets the head schema from flowdb's snapshot in
    one transaction instead of replaying every revision. Contract revisions wait until
    no replica of an older release serves (see --contract-now).
    """
    upgrade_command(revision, yes, dry_run, accept_changed, contract_now, as_json)


@database_app.command()
def downgrade(
    revision: str = typer.Option(
        "-1",
        "--revision",
        "-r",
        metavar="REV",
        help="Where to go: -N steps (default -1), a revision id (4+ characters), base; "
        "with --dry-run also FROM:TO, e.g. head:base.",
    ),
    yes: bool = _YES,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Downgrade the database (default: one revision back). Data of removed tables is lost.

    The plan is shown first: the revisions reverted, and the tables and columns that
    lose data, with their row counts.
    """
    _no_dry_run_json(dry_run, as_json)
    json_output.enable(as_json)
    if dry_run:
        from flowdb.database import commands

        commands.preview(_database(), "downgrade", revision)
        return
    _migrate("downgrade", revision, yes)


@database_app.command()
def revision(
    message: str = typer.Option(
        None, "--message", "-m", metavar="TEXT", help="What the revision changes (required)."
    ),
    autogenerate: bool = typer.Option(
        False, "--autogenerate", help="Write the differences between models and database."
    ),
) -> None:
    """Create a new revision file in flowdb's migration history (for developers)."""
    from flowdb.database.authoring import create_revision

    path = create_revision(_database(), message or "", autogenerate)
    stdout_console().print(f"Wrote {escape(str(path))}")
    _say(
        "When it is final: 'flowdb database manifest', then 'flowdb database snapshot' on an "
        "empty database of each dialect (README: Fresh installs)."
    )


@database_app.command()
def stamp(
    revision_argument: str | None = typer.Argument(
        None, metavar="[REV]", help="Revision id, 'head' or 'base' (or -r REV)."
    ),
    revision_option: str | None = typer.Option(
        None,
        "--revision",
        "-r",
        metavar="REV",
        help="The revision to record, as upgrade and downgrade take it.",
    ),
    yes: bool = _YES,
    take_over: bool = _TAKE_OVER,
    as_json: bool = _JSON,
) -> None:
    """Record a revision in the database without running any migration."""
    from flowdb.database import commands
    from flowdb.errors import UsageError

    json_output.enable(as_json)
    if revision_argument is not None and revision_option is not None:
        raise UsageError("stamp takes one revision: pass REV or -r REV, not both.")
    revision = revision_argument if revision_argument is not None else revision_option
    if revision is None:
        raise UsageError("stamp needs the revision to record: pass REV or -r REV.")
    database = _database()
    before: list[str | None] = []

    def show(plan: Plan, status: SchemaStatus, emit: Callable[[str], None]) -> None:
        emit(
            f"Stamp records {plan.target or 'base'} as the revision of "
            f"{escape(database.location())} (now {status.current or 'base'}); no migration runs."
        )

    def question(plan: Plan) -> str:
        return "Stamp it?"

    def approve(plan: Plan, status: SchemaStatus) -> bool:
        before.append(plan.current)
        return _approval(report, yes, show, question)(plan, status)

    document: dict[str, object] = {"command": "stamp", "database": database.url.redacted()}
    with migration_report(f"Stamping {escape(database.location())}", show_steps=False) as report:
        try:
            target = commands.stamp(database, revision, take_over=take_over, approve=approve)
        except commands.Declined:
            raise _declined({**document, "before": before[0] if before else None}) from None
    if json_output.enabled():
        json_output.emit(
            {
                **document,
                "before": before[0] if before else None,
                "after": target,
                "backup": report.backup,
                "exit_code": 0,
            }
        )
        return
    result(f"Stamped {escape(database.location())} at {target or 'base'}.")


@database_app.command()
def reset(yes: bool = _YES, take_over: bool = _TAKE_OVER) -> None:
    """Drop every flowdb table and recreate the schema at head. All flowdb data is lost."""
    from flowdb.database import commands
    from flowdb.database.impact import table_losses
    from flowdb.database.maintenance import flowdb_table_names, reset_database

    database = _database()

    def show(plan: Plan, status: SchemaStatus, emit: Callable[[str], None]) -> None:
        emit(f"Database: {escape(database.location())}")
        losses = table_losses(database, flowdb_table_names(), status)
        emit("Reset drops every flowdb table, then creates the schema at head:")
        for loss in losses:
            emit(f"  {escape(loss.describe())}")
        if not losses:
            emit("  no rows are lost (the flowdb tables are empty)")

    def question(plan: Plan) -> str:
        return f"Drop ALL flowdb data in {escape(database.describe())} and recreate the schema?"

    with migration_report(f"Resetting {escape(database.location())}") as report:
        try:
            reset_database(
                database, take_over=take_over, approve=_approval(report, yes, show, question)
            )
        except commands.Declined:
            _say("Cancelled; nothing was changed.")
            raise typer.Exit(1) from None


@database_app.command()
def restore(
    file: str | None = typer.Argument(
        None,
        metavar="[FILE]",
        help="The backup to restore (default: the newest backup of this database).",
    ),
    yes: bool = _YES,
) -> None:
    """Put a SQLite backup back (default: the newest); the current database is backed up first.

    The file is checked (integrity, flowdb's, a revision this flowdb knows), then what
    is replaced is shown: the revision and row counts now and in the backup.
    """
    from pathlib import Path

    from flowdb.database import commands
    from flowdb.database.backup import RestorePlan
    from flowdb.database.backup import restore as restore_backup

    database = _database()

    def approve(plan: RestorePlan) -> bool:
        confirm_or_refuse("", yes or sys.stdin.isatty())  # no terminal, no -y: refuse first
        with report.paused():
            _show(f"Database: {escape(database.location())}")
            _show(f"  now:    {escape(plan.current.describe())}")
            _show(f"  backup: {escape(plan.backup.describe())}  ({escape(str(plan.source))})")
            return confirm_or_refuse("Replace the database with the backup?", yes)

    with migration_report(f"Restoring {escape(database.location())}", show_steps=False) as report:
        try:
            restored = restore_backup(database, Path(file) if file else None, approve)
        except commands.Declined:
            _say("Cancelled; nothing was changed.")
            raise typer.Exit(1) from None
    undo = f"; to undo: flowdb database restore {restored.undo}" if restored.undo else ""
    _say(
        f"Restored {escape(database.location())} from {escape(str(restored.source))} "
        f"(at {restored.revision or 'base'}){escape(undo)}."
    )


@database_app.command()
def current(as_json: bool = _JSON) -> None:
    """Show the database's revision and whether it is at head."""
    from flowdb.cli.current_view import current as show_current

    show_current(as_json)


@database_app.command()
def history(as_json: bool = _JSON) -> None:
    """List every revision, oldest first, with when and by whom each applied one was applied."""
    from flowdb.cli.fleet_view import fleet_lines
    from flowdb.database import journal
    from flowdb.database.history import load_history
    from flowdb.errors import FlowdbError, one_line_message

    json_output.enable(as_json)
    revisions = load_history()
    failure: FlowdbError | None = None
    position: int | None = None
    applied_rows: dict[str, dict[str, object]] = {}
    changed: list[str] = []
    fleet: list[str] = []
    try:
        database = _database()
        applied = database.status()
        applied.require_known(database)
        position = revisions.position(applied.current)
        runs = journal.read_runs(database, applied)
        applied_rows = journal.applied_rows(runs, revisions, applied.current)
        changed = journal.changed_revisions(runs, revisions, applied.current)
        fleet = fleet_lines(database, applied)
    except FlowdbError as error:
        failure = error  # still list the revisions; fail once they are printed
    if as_json:
        listing = [
            {
                "position": index,
                "revision": item.id,
                "title": item.title,
                "phase": item.phase,
                "applied": position is not None and index <= position,
                "changed": item.id in changed,
                **_applied_info(applied_rows.get(item.id)),
            }
            for index, item in enumerate(revisions.revisions, start=1)
        ]
        if failure is None:
            json_output.emit(listing)  # a list, as before: scripts index it
            return
        json_output.emit(
            {
                "error": one_line_message(failure),
                "exit_code": int(failure.exit_code),
                "revisions": listing,
            }
        )
        raise failure
    out = stdout_console()
    for index, item in enumerate(revisions.revisions, start=1):
        if position is None:
            mark = ""
        elif index < position:
            mark = "[green]✓[/]"
        elif index == position:
            mark = "[green]✓ (current)[/]"
        else:
            mark = "[dim]· pending[/]"
        row = applied_rows.get(item.id)
        when = ""
        if row is not None and position is not None and index <= position:
            by = f"{row['db_user']}@{row['host']}"
            at = str(row["started_at"]).replace("T", " ")[:19] + " UTC"
            when = f"[dim]{at} by {escape(by)} ({row['direction']})[/]  "
        if item.id in changed:
            when += "[red]file changed since applied[/]  "
        phase = f"[dim]{item.phase}[/]  "
        out.print(f"{index:>3}  {item.id}  {phase}{escape(item.title)}  {when}{mark}".rstrip())
    if position is not None:
        pending = len(revisions.revisions) - position
        out.print(f"{position} applied, {pending} pending; head is {revisions.head}")
    for line in fleet:
        out.print(escape(line))
    if failure is not None:
        raise failure


@database_app.command()
def wait(
    timeout: float = typer.Option(
        60.0, "--timeout", min=0, metavar="S", help="Give up after S seconds (default 60)."
    ),
    as_json: bool = _JSON,
) -> None:
    """Wait until the database is at head: exit 0 then, non-zero with one line on timeout.

    For replicas and deploy scripts that start while a migration job runs. A database
    ahead of this flowdb, or another application's, fails at once.
    """
    from flowdb.database.waiting import wait_for_head

    json_output.enable(as_json)
    database = _database()
    started = time.perf_counter()
    status = wait_for_head(database, timeout)
    if json_output.enabled():
        json_output.emit(
            {
                "command": "wait",
                "database": database.url.redacted(),
                "revision": status.current,
                "at_head": True,
                "seconds": round(time.perf_counter() - started, 3),
                "exit_code": 0,
            }
        )
        return
    result(f"{escape(database.location())} is at head ({status.current}).")


@database_app.command()
def check(as_json: bool = _JSON) -> None:
    """Compare the schema with the models: exit 0 when equal, 1 listing differences.

    Other exit codes say the comparison could not run (see README: exit codes).
    """
    from flowdb.database.schema_check import schema_differences

    json_output.enable(as_json)
    database = _database()
    out = stdout_console()
    status = database.status()  # reads only; never creates a SQLite file
    status.require_known(database)

    def verdict(differences: list[str]) -> None:
        json_output.emit(
            {
                "command": "check",
                "database": database.url.redacted(),
                "matches": not differences,
                "differences": differences,
                "exit_code": 1 if differences else 0,
            }
        )

    if not database.dialect.exists():  # comparing would create an empty SQLite file
        missing = (
            f"The database {database.location()} does not exist yet, so every table "
            "of the models is missing; run 'flowdb database upgrade' to create it."
        )
        if json_output.enabled():
            verdict([missing])
        else:
            out.print(escape(missing))
        raise typer.Exit(1)
    from flowdb.database.commands import ACCEPT_CHANGED_FLAG, changed_files
    from flowdb.database.schema_check import settled_differences

    def compare(settled: SchemaStatus) -> list[str]:
        return [
            f"revision {revision}: its file differs from the one applied "
            f"(upgrade refuses until it is restored or accepted with {ACCEPT_CHANGED_FLAG})"
            for revision in changed_files(database, settled)
        ] + schema_differences(database)

    # Waits for a running migration, then compares a schema no migration is changing.
    differences = settled_differences(database, compare)
    if json_output.enabled():
        verdict(differences)
        if differences:
            raise typer.Exit(1)
        return
    if not differences:
        out.print("The database schema matches the models.")
        return
    out.print(f"The database schema differs from the models in {len(differences)} place(s):")
    for difference in differences:
        out.print(f"  - {escape(difference)}")
    raise typer.Exit(1)


@database_app.command()
def lint() -> None:
    """Check every revision's PostgreSQL SQL for locks a live database would feel (developers).

    Runs squawk and flowdb's own rules; exit 1 listing the findings. Exceptions are
    declared in the revision (LINT_ALLOW = {"rule": "why"}).
    """
    from flowdb.database.lint import lint as lint_history

    database = _database()
    findings = lint_history(database)
    out = stdout_console()
    if not findings:
        count = len(database.history.revisions)
        out.print(f"All {count} revisions pass the migration lint.")
        return
    out.print(f"{len(findings)} finding(s) in the migration history:")
    for finding in findings:
        out.print(f"  - {escape(finding.describe())}")
    raise typer.Exit(1)


@database_app.command()
def snapshot() -> None:
    """Regenerate the head-schema snapshot of this database's dialect (for developers).

    Replays the whole history on the configured database, which must be empty (it is
    left at head), and writes snapshots/<dialect>.sql, which fresh installs run. Run
    it once per dialect after adding a revision; a test fails until you do.
    """
    from flowdb.database.commands import make_snapshot

    path = make_snapshot(_database())
    stdout_console().print(f"Wrote {escape(str(path))}")


@database_app.command()
def manifest() -> None:
    """Rewrite the manifest of migration file hashes (for developers, after a new revision)."""
    from flowdb.database.fingerprints import write_manifest
    from flowdb.database.history import load_history

    path = write_manifest(load_history())
    stdout_console().print(f"Wrote {escape(str(path))}")


@database_app.command("alembic-ini")
def alembic_ini(
    path: str = typer.Argument(
        "alembic.ini", metavar="[PATH]", help="Where to write it (a folder gets alembic.ini)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an ini for Alembic's own CLI: alembic -c PATH current | upgrade head | check ...

    The ini points Alembic at flowdb's migration history; the database is
    FLOWDB_DATABASE_URL unless you set sqlalchemy.url in it. Runs that change the schema
    take flowdb's migration lock and are recorded as flowdb's own are.
    """
    from pathlib import Path

    from flowdb.database.interop import write_ini

    written = write_ini(Path(path), force=force)
    stdout_console().print(f"Wrote {escape(str(written))}")
    _say(f"Use it with: alembic -c {escape(str(written))} current")


def _register_clean() -> None:
    """``clean`` lives in its own module (``cli/clean.py``); it joins this group here."""
    from flowdb.cli.clean import clean

    database_app.command("clean")(clean)


_register_clean()
