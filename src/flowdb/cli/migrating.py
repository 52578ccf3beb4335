"""Moving the database along its history for the CLI: plan shown, confirmed, reported.

The bodies of ``upgrade`` and ``downgrade`` and the helpers ``stamp`` and ``reset``
share. No Typer here: ``flowdb.cli.fast`` runs ``upgrade`` from here without building
the Typer app (``flowdb.cli.database`` declares its options and help).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from flowdb.cli import json_output
from flowdb.cli.output import (
    MigrationReport,
    confirm_or_refuse,
    escape,
    migration_report,
    result,
    stderr_console,
    stdout_console,
)
from flowdb.database.events import Direction

if TYPE_CHECKING:
    from collections.abc import Callable

    from flowdb.database.commands import Approval
    from flowdb.database.planning import Plan
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

    #: Prints what a plan does, through the given printer (``show_result`` or ``say``).
    Show = Callable[[Plan, SchemaStatus, Callable[[str], None]], None]


def open_database() -> Database:
    from flowdb.database.target import Database

    return Database.from_settings()


def say(text: str) -> None:
    """A message about what happens (stderr, beside the progress lines)."""
    stderr_console().print(text)


def show_result(text: str) -> None:
    """What a command will do (its plan): stdout, so stderr keeps one line on failure."""
    stdout_console().print(text)


def approval(
    report: MigrationReport,
    yes: bool,
    show: Show,
    question: Callable[[Plan], str],
    emit: Callable[[str], None] | None = None,
) -> Approval:
    """An ``approve`` callback: print what the plan does (``emit``, default stdout), then ask.

    Without a terminal and without ``-y`` the plan is still printed, on stdout, before
    the refusal: a CI job's log then shows what the command would have done.
    """

    def approve(plan: Plan, status: SchemaStatus) -> bool:
        with report.paused():
            if not (yes or sys.stdin.isatty()):
                show(plan, status, show_result)
                confirm_or_refuse("", False)  # no terminal, no -y: refuse
            show(plan, status, emit or show_result)
            return confirm_or_refuse(question(plan), yes)

    return approve


def declined(document: dict[str, object]) -> SystemExit:
    """Say that the user said no (JSON: ``document`` with the error), for ``raise``."""
    say("Cancelled; nothing was changed.")
    if json_output.enabled():
        json_output.emit({**document, "error": "Cancelled; nothing was changed.", "exit_code": 1})
    return SystemExit(1)


def no_dry_run_json(dry_run: bool, as_json: bool) -> None:
    """Refuse ``--dry-run`` with ``--json``: the dry run's output is SQL, not a result."""
    if dry_run and as_json:
        from flowdb.errors import UsageError

        raise UsageError(
            "--dry-run prints SQL and --json a result document; pass one of them, not both."
        )


def migrate(
    direction: Direction,
    revision: str,
    yes: bool,
    accept_changed: bool = False,
    *,
    hold_contracts: bool = False,
) -> None:
    """Run an upgrade or downgrade with its plan shown and confirmed.

    A downgrade always prints its plan (what is reverted, what data is lost) on stdout,
    also with ``-y``, so logs keep it; an upgrade shows its plan only when it asks, and
    reports each step as it lands on stderr. The result (the last line, or the JSON
    document) is on stdout; stderr keeps the progress and at most one error line.
    """
    from flowdb.database import commands

    database = open_database()
    verb = "Upgrading" if direction == "upgrade" else "Downgrading"

    def show(plan: Plan, status: SchemaStatus, emit: Callable[[str], None]) -> None:
        if direction == "upgrade" and yes:
            return
        emit(f"Database: {escape(database.location())}")
        for line in commands.describe_plan(database, plan, status):
            emit(escape(line.removeprefix("flowdb: ")))

    def question(plan: Plan) -> str:
        return f"{plan.describe().capitalize()}: go ahead?"

    started = time.perf_counter()
    document: dict[str, object] = {"command": direction, "database": database.url.redacted()}
    with migration_report(f"{verb} {escape(database.location())}") as report:
        try:
            plan = commands.migrate(
                database,
                direction,
                revision,
                approve=approval(
                    report, yes, show, question, show_result if direction == "downgrade" else say
                ),
                accept_changed=accept_changed,
                hold_contracts=hold_contracts,
            )
        except commands.Declined:
            raise declined(document) from None
    elapsed = time.perf_counter() - started
    after = plan.current if plan.is_empty else plan.target
    if json_output.enabled():
        fresh = report.fresh
        json_output.emit(
            {
                **document,
                "before": plan.current,
                "after": after,
                "steps": report.steps,
                "fresh_install": None
                if fresh is None
                else {
                    "head": fresh.head,
                    "revisions": fresh.revisions,
                    "seconds": round(fresh.elapsed, 3),
                },
                "backup": report.backup,
                "held": plan.held,
                "seconds": round(elapsed, 3),
                "exit_code": 0,
            }
        )
    elif plan.is_empty:
        result(f"Nothing to {direction}: {escape(database.describe())} is at {after or 'base'}.")
    else:
        how = " from the snapshot" if report.fresh is not None else ""
        result(
            f"{direction.capitalize()} finished: {len(plan.steps)} migration(s){how} in "
            f"{elapsed:.2f} s; {escape(database.location())} is at {after or 'base'}."
        )
    if plan.held and not json_output.enabled():
        say(escape(plan.held))


def upgrade(
    revision: str,
    yes: bool,
    dry_run: bool,
    accept_changed: bool,
    contract_now: bool,
    as_json: bool,
) -> None:
    """``flowdb database upgrade`` with its options parsed (by Typer or ``cli.fast``)."""
    no_dry_run_json(dry_run, as_json)
    json_output.enable(as_json)
    if dry_run:
        from flowdb.database import commands

        commands.preview(open_database(), "upgrade", revision)
        return
    migrate("upgrade", revision, yes, accept_changed, hold_contracts=not contract_now)
