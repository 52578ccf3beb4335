"""``flowdb database ...``: move the database along its migration history.

Commands import the database layer when they run, never at import time, so that
``flowdb --help`` does not pay for SQLAlchemy or Alembic.
"""

from __future__ import annotations

import typer

from flowdb.cli.output import (
    confirm_or_refuse,
    escape,
    migration_report,
    stderr_console,
    stdout_console,
)

database_app = typer.Typer(
    help="Create, upgrade, downgrade and inspect the database.",
    no_args_is_help=True,
)

_YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
_DRY_RUN = typer.Option(
    False, "--dry-run", help="Print the SQL on stdout instead of running it; writes nothing."
)


def _target() -> str:
    from flowdb.database.urls import configured_database_url

    return escape(configured_database_url().redacted())


def _check_revision_name(revision: str) -> None:
    """Reject a revision that names nothing in the history, before asking or touching anything.

    Needs no database: relative steps (``-1``, ``+2``) and ``FROM:TO`` ranges are left
    to ``_plan``, which knows where the database stands.
    """
    from flowdb.database.alembic_commands import _relative_steps, _resolve_absolute
    from flowdb.database.history import load_history

    if _relative_steps(revision) is None and ":" not in revision:
        _resolve_absolute(load_history(), revision)


def _plan(direction: str, revision: str) -> tuple[str | None, str | None]:
    """Where the database is, and where ``direction`` to ``revision`` would take it.

    Only reads the database (never creates a SQLite file, never takes the lock), so a
    target that cannot be reached, an unknown database revision or an unreachable
    server fail here with the database untouched. Returns ``(current, target)`` with
    ``None`` meaning base; ``current == target`` means there is nothing to do. The
    command itself checks again under the migration lock.
    """
    from flowdb.database.alembic_commands import _preview_span
    from flowdb.database.history import load_history
    from flowdb.database.status import require_known_revision, schema_status
    from flowdb.database.urls import configured_database_url

    database = configured_database_url()
    history = load_history()
    status = schema_status(database, history)
    require_known_revision(status, database)
    span = _preview_span(direction, history, status.current, revision)
    if span is None:
        return status.current, status.current
    target = span.rpartition(":")[2]
    return status.current, None if target == "base" else target


def _nothing_to_do(direction: str, current: str | None) -> None:
    stderr_console().print(f"Nothing to {direction}: the database is at {current or 'base'}.")


@database_app.command()
def upgrade(
    revision: str = typer.Option("head", "--revision", "-r", help="Revision to upgrade to."),
    yes: bool = _YES,
    dry_run: bool = _DRY_RUN,
) -> None:
    """Upgrade the database to a revision (default: head, the newest)."""
    from flowdb.database.alembic_commands import alembic_upgrade

    if dry_run:
        alembic_upgrade(revision, dry_run=True)
        return
    _check_revision_name(revision)
    if not confirm_or_refuse(f"Upgrade the database at {_target()} to {escape(revision)}?", yes):
        raise typer.Exit(1)
    current, target = _plan("upgrade", revision)
    if target == current:
        _nothing_to_do("upgrade", current)
        return
    with migration_report(f"Upgrading {_target()} to {target}"):
        alembic_upgrade(revision)


@database_app.command()
def downgrade(
    revision: str = typer.Option(
        "-1", "--revision", "-r", help="Revision to downgrade to (default: one step back)."
    ),
    yes: bool = _YES,
    dry_run: bool = _DRY_RUN,
) -> None:
    """Downgrade the database (default: one revision back). Data of removed tables is lost."""
    from flowdb.database.alembic_commands import alembic_downgrade

    if dry_run:
        alembic_downgrade(revision, dry_run=True)
        return
    _check_revision_name(revision)
    question = f"Downgrade the database at {_target()} to {escape(revision)}? Removed data is lost."
    if not confirm_or_refuse(question, yes):
        raise typer.Exit(1)
    current, target = _plan("downgrade", revision)
    if target == current:
        _nothing_to_do("downgrade", current)
        return
    with migration_report(f"Downgrading {_target()} to {target or 'base'}"):
        alembic_downgrade(revision)


@database_app.command()
def revision(
    message: str = typer.Option(None, "--message", "-m", help="What the revision changes."),
    autogenerate: bool = typer.Option(
        False, "--autogenerate", help="Write the differences between models and database."
    ),
) -> None:
    """Create a new revision file in flowdb's migration history (for developers)."""
    from flowdb.database.alembic_commands import alembic_revision

    alembic_revision(message=message if message is not None else "", autogenerate=autogenerate)


@database_app.command()
def stamp(
    revision: str = typer.Argument(..., help="Revision id, 'head' or 'base'."),
) -> None:
    """Record a revision in the database without running any migration."""
    from flowdb.database.alembic_commands import alembic_stamp

    with migration_report(f"Stamping {_target()}", show_steps=False):
        alembic_stamp(revision)


@database_app.command()
def reset(yes: bool = _YES) -> None:
    """Drop every flowdb table and recreate the schema at head. All data is lost."""
    from flowdb.database.maintenance import reset_database

    question = f"Drop ALL flowdb data in {_target()} and recreate the schema?"
    if not confirm_or_refuse(question, yes):
        raise typer.Exit(1)
    with migration_report(f"Resetting {_target()}"):
        reset_database()


@database_app.command()
def current() -> None:
    """Show the database's revision and whether it is at head."""
    from flowdb.database.history import load_history
    from flowdb.database.status import require_known_revision, schema_status
    from flowdb.database.urls import configured_database_url

    database = configured_database_url()
    history = load_history()
    status = schema_status(database, history)
    out = stdout_console()
    out.print(f"Database: {escape(database.redacted())}")
    if status.current is None:
        out.print("Revision: none (empty database)")
    else:
        title = next((r.title for r in history.revisions if r.id == status.current), "")
        out.print(escape(f"Revision: {status.current}" + (f"  {title}" if title else "")))
    if not status.known:
        out.print(
            "Status: newer than this flowdb (unknown revision); use the flowdb that migrated it"
        )
        require_known_revision(status, database)  # and fail: this flowdb cannot work with it
    elif status.at_head:
        out.print("Status: at head")
    else:
        out.print(f"Status: {status.pending} migration(s) pending; run 'flowdb database upgrade'")


@database_app.command()
def history() -> None:
    """List every revision, oldest first, marking those applied to the database."""
    from flowdb.database.history import load_history
    from flowdb.database.status import require_known_revision, schema_status
    from flowdb.database.urls import configured_database_url
    from flowdb.errors import FlowdbError

    history = load_history()
    failure: FlowdbError | None = None
    position: int | None = None
    try:
        database = configured_database_url()
        applied = schema_status(database, history)
        require_known_revision(applied, database)
        position = history.position(applied.current)
    except FlowdbError as error:
        failure = error  # still list the revisions; fail once they are printed
    out = stdout_console()
    for index, item in enumerate(history.revisions, start=1):
        if position is None:
            mark = ""
        elif index < position:
            mark = "[green]✓[/]"
        elif index == position:
            mark = "[green]✓ (current)[/]"
        else:
            mark = "[dim]· pending[/]"
        out.print(f"{index:>3}  {item.id}  {escape(item.title)}  {mark}".rstrip())
    if position is not None:
        pending = len(history.revisions) - position
        out.print(f"{position} applied, {pending} pending; head is {history.head}")
    if failure is not None:
        raise failure


@database_app.command()
def check() -> None:
    """Compare the database schema with the models; exit 1 and list differences if any."""
    from flowdb.database.engines import prepare_sqlite_folder, translated_errors
    from flowdb.database.schema_check import schema_differences
    from flowdb.database.urls import configured_database_url

    database = configured_database_url()
    out = stdout_console()
    path = database.sqlite_path
    if path is not None and not path.exists():
        if path.parent.exists():
            prepare_sqlite_folder(database)  # only validates: the folder exists already
        # Comparing would create an empty file; a check must not write anything.
        out.print(
            f"The database {escape(str(path))} does not exist yet, so every table of the "
            "models is missing; run 'flowdb database upgrade' to create it."
        )
        raise typer.Exit(1)
    with translated_errors(database):
        differences = schema_differences(database)
    if not differences:
        out.print("The database schema matches the models.")
        return
    out.print(f"The database schema differs from the models in {len(differences)} place(s):")
    for difference in differences:
        out.print(f"  - {escape(difference)}")
    raise typer.Exit(1)
