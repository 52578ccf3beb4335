"""``flowdb database ...``: move the database along its migration history.

Commands import the database layer when they run, never at import time, so that
``flowdb --help`` does not pay for SQLAlchemy or Alembic.
"""

from __future__ import annotations

import typer

from flowdb.cli.output import confirm_or_refuse, migration_report, stderr_console, stdout_console

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

    return configured_database_url().redacted()


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
    if not confirm_or_refuse(f"Upgrade the database at {_target()} to {revision}?", yes):
        raise typer.Exit(1)
    with migration_report(f"Upgrading {_target()} to {revision}"):
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
    question = f"Downgrade the database at {_target()} to {revision}? Removed data is lost."
    if not confirm_or_refuse(question, yes):
        raise typer.Exit(1)
    with migration_report(f"Downgrading {_target()} to {revision}"):
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

    with migration_report(f"Stamping {_target()}"):
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
    from flowdb.database.status import schema_status
    from flowdb.database.urls import configured_database_url

    database = configured_database_url()
    history = load_history()
    status = schema_status(database, history)
    out = stdout_console()
    out.print(f"Database: {database.redacted()}")
    if status.current is None:
        out.print("Revision: none (empty database)")
    else:
        title = next((r.title for r in history.revisions if r.id == status.current), "")
        out.print(f"Revision: {status.current}" + (f"  {title}" if title else ""))
    if not status.known:
        out.print(
            "Status: newer than this flowdb (unknown revision); use the flowdb that migrated it"
        )
    elif status.at_head:
        out.print("Status: at head")
    else:
        out.print(f"Status: {status.pending} migration(s) pending; run 'flowdb database upgrade'")


@database_app.command()
def history() -> None:
    """List every revision, oldest first, marking those applied to the database."""
    from flowdb.database.history import load_history
    from flowdb.database.status import schema_status
    from flowdb.database.urls import configured_database_url
    from flowdb.errors import FlowdbError

    history = load_history()
    try:
        applied = schema_status(configured_database_url(), history)
        position = history.position(applied.current) if applied.known else None
    except FlowdbError as error:
        stderr_console().print(f"[yellow]Cannot read the database's revision: {error}[/]")
        position = None
    out = stdout_console()
    for index, item in enumerate(history.revisions, start=1):
        if position is None:
            mark = " "
        elif index < position:
            mark = "[green]✓[/]"
        elif index == position:
            mark = "[green]✓[/] [bold](current)[/]"
        else:
            mark = "[dim]·[/]"
        out.print(f"{index:>3}  {item.id}  {mark:<3} {item.title}")
    if position is not None:
        pending = len(history.revisions) - position
        out.print(f"{position} applied, {pending} pending; head is {history.head}")


@database_app.command()
def check() -> None:
    """Compare the database schema with the models; exit 1 and list differences if any."""
    from flowdb.database.schema_check import schema_differences
    from flowdb.database.urls import configured_database_url

    differences = schema_differences(configured_database_url())
    out = stdout_console()
    if not differences:
        out.print("The database schema matches the models.")
        return
    out.print(f"The database schema differs from the models in {len(differences)} place(s):")
    for difference in differences:
        out.print(f"  - {difference}")
    raise typer.Exit(1)
