"""Revision arguments resolved against the history: what an upgrade or downgrade will do.

A ``Plan`` says where the database is, where a command would take it and through which
revisions. It is computed from the history and the current revision alone (no database
access), so the CLI can show it, ask about it, and hand it to the runner, which checks
it again under the migration lock.

Revision arguments: ``head``, ``base``, a revision id or a prefix of at least
``MIN_PREFIX`` characters that is not all digits (``-r 1`` is a typo for ``-r -1``,
never a prefix), a relative step (``+2``, ``-1``), and for dry-runs a ``FROM:TO`` range.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowdb.database.events import Direction
from flowdb.database.history import History, Revision
from flowdb.errors import DowngradeBelowBaseError, UnknownRevisionError, UsageError

MIN_PREFIX = 4


@dataclass(frozen=True)
class Plan:
    """What moving a database from ``current`` to ``target`` runs, in order."""

    direction: Direction
    current: str | None
    target: str | None
    #: The revisions applied (upgrade) or reverted (downgrade), in the order they run.
    steps: tuple[Revision, ...]
    #: Why an upgrade stops short of where it was asked to go (``fleet.hold_contracts``):
    #: one sentence naming the contract revision and the replicas it waits for.
    held: str = ""

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to do."""
        return not self.steps

    @property
    def span(self) -> str:
        """The ``FROM:TO`` range Alembic's offline (SQL) mode takes for this plan."""
        target = self.target or "base"
        return f"{self.current}:{target}" if self.current else target

    def describe(self) -> str:
        """``upgrade from 1b5e8c2f7d43 to 7b5e9c2f4d3a (6 migrations)``."""
        count = len(self.steps)
        return (
            f"{self.direction} from {self.current or 'base'} to {self.target or 'base'} "
            f"({count} migration{'s' if count != 1 else ''})"
        )


def relative_steps(revision: str) -> int | None:
    """``+2`` -> 2, ``-1`` -> -1; ``None`` when ``revision`` is not a relative step."""
    text = revision.strip()
    if len(text) > 1 and text[0] in "+-" and text[1:].isdigit():
        return int(text)
    return None


def is_range(revision: str) -> bool:
    """Whether ``revision`` is a ``FROM:TO`` range (only dry-runs accept one)."""
    return ":" in revision


#: The longest revision argument an error quotes whole: it is whatever text a script
#: passed, and the error stays one readable line.
QUOTED_AT_MOST = 60


def quoted(revision: str) -> str:
    """``revision`` quoted for an error, cut after ``QUOTED_AT_MOST`` characters."""
    if len(revision) <= QUOTED_AT_MOST:
        return repr(revision)
    return f"{revision[:QUOTED_AT_MOST]!r}... ({len(revision):,} characters)"


def check_argument(revision: object) -> str:
    """``revision`` as a stripped string; a ``UsageError`` for anything that is not text."""
    if not isinstance(revision, str) or not revision.strip():
        raise UnknownRevisionError(
            f"The revision must be text such as 'head', '-1' or a revision id, not {revision!r}."
        )
    return revision.strip()


def resolve(history: History, revision: str) -> str | None:
    """Resolve ``head``, ``base``, an id or an id prefix to an id (``None`` = base)."""
    text = check_argument(revision)
    if text in ("head", "heads"):
        return history.head
    if text == "base":
        return None
    if history.knows(text):
        return text
    if text.isdigit():
        raise UnknownRevisionError(
            f"Revision {quoted(revision)} is a number, not a revision id; to move relative to the "
            f"current revision write -{text} (back) or +{text} (forward)."
        )
    if len(text) < MIN_PREFIX:
        raise UnknownRevisionError(
            f"Revision {quoted(revision)} is too short to name a revision; give at least "
            f"{MIN_PREFIX} characters of its id ('flowdb database history' lists them)."
        )
    matches = [r.id for r in history.revisions if r.id.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownRevisionError(
            f"Revision {quoted(revision)} is ambiguous ({', '.join(matches)}); give more "
            "characters of the id."
        )
    raise UnknownRevisionError(
        f"Revision {quoted(revision)} is not in flowdb's migration history; run "
        "'flowdb database history' to list the revisions."
    )


def check_name(history: History, revision: object, *, allow_range: bool) -> str:
    """Validate ``revision`` without a database: every absolute name in it must resolve."""
    text = check_argument(revision)
    if is_range(text):
        if not allow_range:
            raise UsageError(
                f"A FROM:TO range ({text!r}) only works with --dry-run, to print SQL without a "
                "database; without it give one revision, e.g. -r head."
            )
        start, _, end = text.partition(":")
        resolve(history, start or "base")
        resolve(history, end)
    elif relative_steps(text) is None:
        resolve(history, text)
    return text


def plan(history: History, direction: Direction, current: str | None, revision: str) -> Plan:
    """The plan for ``direction`` to ``revision`` from a database at ``current``."""
    text = check_name(history, revision, allow_range=False)
    position = history.position(current)
    steps = relative_steps(text)
    if direction == "upgrade":
        if steps is not None:
            if steps < 0:
                raise UnknownRevisionError(
                    f"Upgrade cannot go back {text}; use 'flowdb database downgrade -r {text}'."
                )
            if position + steps > len(history.revisions):
                available = len(history.revisions) - position
                raise UnknownRevisionError(
                    f"Cannot upgrade {text}: only {available} revision(s) lie between the "
                    "database and head; use 'head' or a smaller step."
                )
            target = history.at(position + steps)
        else:
            target = resolve(history, text)
        # A target behind the database is no upgrade: nothing to do (never a downgrade).
        target_position = max(history.position(target), position)
        return Plan(
            direction,
            current,
            history.at(target_position),
            history.revisions[position:target_position],
        )
    where = current or "base"
    if steps is not None:
        if steps > 0:
            raise UnknownRevisionError(
                f"Downgrade cannot go forward {text}; use 'flowdb database upgrade -r {text}'."
            )
        if position + steps < 0:
            fix = (
                "use -r base to remove them all"
                if current
                else "the database is empty, so there is nothing to downgrade"
            )
            raise DowngradeBelowBaseError(
                f"Cannot downgrade {text} from {where}: only {position} revision(s) are "
                f"applied; {fix}."
            )
        target = history.at(position + steps)
    else:
        target = resolve(history, text)
        if history.position(target) > position:
            raise UnknownRevisionError(
                f"Revision {target} is newer than the database's revision {where}, so there "
                f"is nothing to downgrade to; use 'flowdb database upgrade -r {target}'."
            )
    target_position = history.position(target)
    reverted = tuple(reversed(history.revisions[target_position:position]))
    return Plan(direction, current, target, reverted)


def plan_range(history: History, direction: Direction, revision: str) -> Plan:
    """The plan a dry-run of ``FROM:TO`` prints (no database involved)."""
    start_text, _, end_text = check_name(history, revision, allow_range=True).partition(":")
    start = resolve(history, start_text or "base")
    end = resolve(history, end_text)
    low, high = history.position(start), history.position(end)
    if direction == "upgrade":
        if high < low:
            raise UsageError(
                f"The range {revision!r} goes backwards; an upgrade range runs from older to "
                "newer (e.g. base:head)."
            )
        return Plan(direction, start, end, history.revisions[low:high])
    if high > low:
        raise UsageError(
            f"The range {revision!r} goes forwards; a downgrade range runs from newer to older "
            "(e.g. head:base)."
        )
    return Plan(direction, start, end, tuple(reversed(history.revisions[high:low])))


def stamp_target(history: History, revisions: object) -> str:
    """The one revision a stamp of ``revisions`` records: a name, or a list or tuple of names.

    Alembic's stamp takes a list to stamp several branch heads at once. flowdb's history
    is one line with one head, so a database stands at exactly one revision: every item
    is validated, items that name the same revision (``["head", "<head id>"]``) collapse
    into it, and items naming different revisions are refused, since no database can be
    at two revisions of one line. Returns a revision id or ``"base"``.
    """
    if not isinstance(revisions, list | tuple):
        return check_argument(revisions)
    if not revisions:
        raise UnknownRevisionError(
            "The list of revisions to stamp is empty; give one revision such as 'head'."
        )
    named: dict[str | None, str] = {}
    for item in revisions:
        named.setdefault(resolve(history, check_argument(item)), str(item).strip())
    if len(named) > 1:
        listed = ", ".join(f"{text!r} ({target or 'base'})" for target, text in named.items())
        raise UnknownRevisionError(
            f"Cannot stamp {listed} together: flowdb's migration history has a single branch, "
            "so a database is at one revision; stamp one of them."
        )
    (target,) = named
    return target or "base"


class Declined(Exception):
    """The user said no to a plan; nothing was changed."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(f"Declined: {plan.describe()}")
        self.plan = plan
