"""``flowdb database current`` without Typer: what it prints, in text and in JSON.

Kept apart from ``cli/database.py`` (which declares the command's option and help) so
that ``flowdb.cli.fast`` can run it without building the Typer app.
"""

from __future__ import annotations

from flowdb.cli import json_output
from flowdb.cli.migrating import open_database
from flowdb.cli.output import escape, stdout_console


def applied_info(row: dict[str, object] | None) -> dict[str, object]:
    """When, by whom, how and from which file a revision was applied (from the run record)."""
    if row is None:
        return {"applied_at": None, "applied_by": None, "direction": None, "file_hash": None}
    return {
        "applied_at": row["started_at"],
        "applied_by": f"{row['db_user']}@{row['host']} (pid {row['pid']})",
        "direction": row["direction"],
        "duration_ms": row["duration_ms"],
        "flowdb_version": row["flowdb_version"],
        "file_hash": row["file_hash"],
    }


def current(as_json: bool) -> None:
    """``flowdb database current``: the database's revision and whether it is at head."""
    from flowdb.cli.fleet_view import fleet_json, fleet_lines
    from flowdb.database import journal
    from flowdb.database.commands import ACCEPT_CHANGED_FLAG
    from flowdb.database.partway import part_way

    json_output.enable(as_json)
    database = open_database()
    status = database.status()
    stuck = part_way(status, database.history)
    runs = journal.read_runs(database, status) if status.known else []
    changed = journal.changed_revisions(runs, database.history, status.current) if runs else []
    if as_json:
        from flowdb.errors import FlowdbError, one_line_message

        failure: FlowdbError | None = None
        try:
            status.require_known(database)
        except FlowdbError as error:
            failure = error
        applied = journal.applied_rows(runs, database.history, status.current) if runs else {}
        outcome: dict[str, object] = {"exit_code": 0}
        if failure is not None:
            outcome = {"error": one_line_message(failure), "exit_code": int(failure.exit_code)}
        json_output.emit(
            {
                "database": database.url.redacted(),
                "revision": status.current,
                "head": status.head,
                "owner": status.owner,
                "at_head": status.at_head and stuck is None,
                "pending": status.pending,
                "in_progress": [list(item) for item in status.in_progress],
                "way_out": None if stuck is None else stuck.way_out(),
                "changed_revisions": changed,
                **(applied_info(applied.get(status.current or "")) if status.current else {}),
                **(fleet_json(database, status) if failure is None else {}),
                **outcome,
            }
        )
        if failure is not None:
            raise failure  # the edge prints its one line on stderr
        return
    out = stdout_console()
    out.print(f"Database: {escape(database.url.redacted())}")
    if status.current is None:
        out.print("Revision: none (empty database)")
    elif status.known:
        title = database.history.get(status.current).title
        out.print(escape(f"Revision: {status.current}" + (f"  {title}" if title else "")))
    else:
        out.print(escape(f"Revision: {status.current}"))
    if status.owner == "newer":
        out.print(
            "Status: newer than this flowdb (unknown revision); use the flowdb that migrated it"
        )
    elif status.owner == "foreign":
        out.print("Status: not a flowdb database")
    elif stuck is not None:
        out.print(f"Status: {escape(stuck.describe())}")
    elif status.at_head:
        out.print("Status: at head")
    else:
        out.print(f"Status: {status.pending} migration(s) pending; run 'flowdb database upgrade'")
    if stuck is not None:
        out.print(f"Part way: {escape(status.describe_progress())}")
        out.print(f"Way out: {escape(stuck.way_out())}")
    for revision in changed:
        out.print(
            f"Changed: the file of revision {revision} differs from the one applied; "
            f"upgrade refuses until it is restored or accepted ({ACCEPT_CHANGED_FLAG})"
        )
    for line in fleet_lines(database, status):
        out.print(escape(line))
    status.require_known(database)  # and fail when this flowdb cannot work with it
