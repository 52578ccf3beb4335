"""``flowdb database clean``: delete finished flow runs older than a duration.

The work is ``flowdb.database.retention``; this module shows what will go (stdout),
asks (``-y`` skips the question; without a terminal and without ``-y`` it refuses),
reports progress on stderr (runs done of the total, rows deleted, time left) and ends
with a summary on stdout.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from flowdb.cli.output import (
    confirm_or_refuse,
    escape,
    interrupted_leaves,
    stderr_console,
    stdout_console,
)

if TYPE_CHECKING:
    from flowdb.database.retention import CleanProgress

#: At most one progress line per this many seconds (and one after the last batch).
PROGRESS_EVERY = 2.0


def clean(
    older_than: str = typer.Option(
        ...,
        "--older-than",
        metavar="DURATION",
        help="Delete finished flow runs whose end is older than this: 30d, 12h or 90m.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print how many rows would be deleted; change nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete finished flow runs (COMPLETED, FAILED, CANCELLED, CRASHED) that ended before
    now minus DURATION, with their task runs, states and logs; artifacts are kept.

    Runs in short batches (FLOWDB_RETENTION_BATCH_SIZE runs each) beside a live API,
    skipping runs another transaction is changing; a clean stopped part way is
    continued by running it again. Refuses a database that is not at head.
    """
    from flowdb.database.column_types import utcnow
    from flowdb.database.retention import (
        TABLES,
        count_expired,
        parse_duration,
        require_cleanable,
    )
    from flowdb.database.retention import (
        clean as run_clean,
    )
    from flowdb.database.target import Database

    age = parse_duration(older_than)
    database = Database.from_settings()
    require_cleanable(database)
    cutoff = utcnow() - age
    counts = count_expired(database, cutoff)
    out = stdout_console()
    out.print(f"Database: {escape(database.location())}")
    out.print(f"Finished flow runs that ended before {cutoff:%Y-%m-%d %H:%M:%S} UTC:")
    for table in (*reversed(TABLES), "artifact"):
        verb = "unlinked, kept" if table == "artifact" else "to delete"
        out.print(f"  {table:<15} {counts[table]:>12,} {verb}")
    if dry_run:
        out.print("Dry run: nothing was changed.")
        return
    if counts["flow_run"] == 0:
        out.print("Nothing to delete.")
        return
    if not confirm_or_refuse("Delete these rows?", yes):
        stderr_console().print("Cancelled; nothing was changed.")
        raise typer.Exit(1)
    interrupted_leaves(
        "the batches that committed stay deleted, the rest is untouched; run the same "
        "clean again to continue"
    )
    err = stderr_console()
    last = [0.0]

    def report(progress: CleanProgress) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY and progress.runs_done < progress.total_runs:
            return
        last[0] = now
        left = progress.seconds_left()
        eta = f", about {left:.0f} s left" if left is not None else ""
        err.print(
            f"Cleaning: {progress.runs_done:,}/{progress.total_runs:,} flow runs, "
            f"{progress.rows_done:,} rows deleted{eta}",
            highlight=False,
        )

    progress = run_clean(
        database, cutoff, batch_size=database.settings.retention_batch_size, on_batch=report
    )
    elapsed = time.monotonic() - progress.started
    out.print(
        f"Deleted {progress.rows_done:,} rows in {progress.batches} batch(es), "
        f"{elapsed:.2f} s: "
        + ", ".join(f"{table} {progress.deleted[table]:,}" for table in reversed(TABLES))
        + f"; {progress.unlinked_artifacts:,} artifact link(s) cleared (artifacts are kept)."
    )
    if progress.space:
        out.print(f"Space: {escape(progress.space)}.")
