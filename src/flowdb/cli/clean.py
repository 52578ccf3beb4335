"""``flowdb database clean``: delete finished flow runs older than a duration.

The work is ``flowdb.database.retention``; this module shows what will go (stdout),
asks (``-y`` skips the question; without a terminal and without ``-y`` it refuses),
reports progress on stderr (runs done of the total, rows deleted per table, time left)
and ends with a summary on stdout, or with ``--json`` one document: what is deleted per
table with the seconds each took.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from flowdb.cli import json_output
from flowdb.cli.output import (
    confirm_or_refuse,
    escape,
    interrupted_leaves,
    result,
    stderr_console,
    stdout_console,
)

if TYPE_CHECKING:
    from flowdb.database.retention import CleanProgress

#: At most one progress line per this many seconds (and one after the last batch).
PROGRESS_EVERY = 2.0


def progress_line(progress: CleanProgress) -> str:
    """One progress line: runs done of the total, rows per table so far, time left."""
    from flowdb.database.retention import TABLES

    left = progress.seconds_left()
    eta = f", about {left:.0f} s left" if left is not None else ""
    tables = ", ".join(f"{table} {progress.deleted[table]:,}" for table in reversed(TABLES))
    return (
        f"Cleaning: {progress.runs_done:,}/{progress.total_runs:,} flow runs, "
        f"{progress.rows_done:,} rows deleted ({tables}){eta}"
    )


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
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as one JSON document on stdout (for scripts)."
    ),
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

    json_output.enable(as_json)
    age = parse_duration(older_than)
    database = Database.from_settings()
    require_cleanable(database)
    cutoff = utcnow() - age
    counts = count_expired(database, cutoff)
    document: dict[str, object] = {
        "command": "clean",
        "database": database.url.redacted(),
        "cutoff": cutoff.isoformat(),
        "dry_run": dry_run,
        "to_delete": {table: counts[table] for table in reversed(TABLES)},
        "artifacts_to_unlink": counts["artifact"],
    }
    out = stdout_console()  # the plan: stderr with --json, whose stdout is the document
    out.print(f"Database: {escape(database.location())}")
    out.print(f"Finished flow runs that ended before {cutoff:%Y-%m-%d %H:%M:%S} UTC:")
    for table in (*reversed(TABLES), "artifact"):
        verb = "unlinked, kept" if table == "artifact" else "to delete"
        out.print(f"  {table:<15} {counts[table]:>12,} {verb}")
    if dry_run or counts["flow_run"] == 0:
        result("Dry run: nothing was changed." if dry_run else "Nothing to delete.")
        if json_output.enabled():
            json_output.emit({**document, "deleted": None, "exit_code": 0})
        return
    if not confirm_or_refuse("Delete these rows?", yes):
        stderr_console().print("Cancelled; nothing was changed.")
        json_output.emit({**document, "error": "Cancelled; nothing was changed.", "exit_code": 1})
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
        err.print(escape(progress_line(progress)), highlight=False)

    progress = run_clean(
        database, cutoff, batch_size=database.settings.retention_batch_size, on_batch=report
    )
    elapsed = time.monotonic() - progress.started
    if json_output.enabled():
        json_output.emit(
            {
                **document,
                "deleted": {
                    table: {
                        "rows": progress.deleted[table],
                        "seconds": round(progress.seconds[table], 3),
                    }
                    for table in reversed(TABLES)
                },
                "artifact_links_cleared": {
                    "rows": progress.unlinked_artifacts,
                    "seconds": round(progress.seconds["artifact"], 3),
                },
                "rows": progress.rows_done,
                "batches": progress.batches,
                "space": progress.space or None,
                "seconds": round(elapsed, 3),
                "exit_code": 0,
            }
        )
        return
    out.print(
        f"Deleted {progress.rows_done:,} rows in {progress.batches} batch(es), "
        f"{elapsed:.2f} s: "
        + ", ".join(f"{table} {progress.deleted[table]:,}" for table in reversed(TABLES))
        + f"; {progress.unlinked_artifacts:,} artifact link(s) cleared (artifacts are kept)."
    )
    if progress.space:
        out.print(f"Space: {escape(progress.space)}.")
