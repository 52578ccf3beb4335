"""The migration history read straight from the revision files, without importing Alembic.

Start-up paths (``ensure_schema``, ``flowdb database current``, the server's readiness
check) only need to know the revision ids and which one is head. Importing Alembic
and loading every revision module costs far more than reading a dozen small files,
so this module reads the ``revision`` / ``down_revision`` assignments as text. A test
checks that it agrees with Alembic's own ``ScriptDirectory``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

VERSIONS_FOLDER = Path(__file__).parent / "migrations" / "versions"

_ASSIGNMENT = re.compile(
    r"^(?P<name>revision|down_revision)\s*(?::[^=]+)?=\s*(?P<value>None|['\"][^'\"]*['\"])",
    re.MULTILINE,
)
_DOCSTRING_TITLE = re.compile(r'^"""(?P<title>[^\n]*)', re.MULTILINE)


@dataclass(frozen=True)
class Revision:
    """One migration: its id, its parent's id (``None`` for the first) and its title."""

    id: str
    down_revision: str | None
    title: str


@dataclass(frozen=True)
class History:
    """The linear migration history, ordered from the first revision to head."""

    revisions: tuple[Revision, ...]

    @property
    def head(self) -> str | None:
        """The newest revision id, or ``None`` for an empty history."""
        return self.revisions[-1].id if self.revisions else None

    def knows(self, revision_id: str) -> bool:
        """Whether ``revision_id`` is part of this history."""
        return any(revision.id == revision_id for revision in self.revisions)

    def position(self, revision_id: str | None) -> int:
        """How many revisions are applied when the database is at ``revision_id``."""
        if revision_id is None:
            return 0
        for index, revision in enumerate(self.revisions):
            if revision.id == revision_id:
                return index + 1
        raise KeyError(revision_id)

    def pending(self, revision_id: str | None) -> tuple[Revision, ...]:
        """The revisions an upgrade to head would apply from ``revision_id``."""
        return self.revisions[self.position(revision_id) :]


def _read_revision(path: Path) -> Revision | None:
    text = path.read_text(encoding="utf-8")
    values = {m["name"]: m["value"] for m in _ASSIGNMENT.finditer(text)}
    if "revision" not in values:
        return None
    down = values.get("down_revision", "None")
    title = _DOCSTRING_TITLE.search(text)
    return Revision(
        id=values["revision"].strip("'\""),
        down_revision=None if down == "None" else down.strip("'\""),
        title=title["title"].strip() if title else "",
    )


@functools.cache
def load_history(folder: Path = VERSIONS_FOLDER) -> History:
    """Read and order the revisions in ``folder`` (cached: the files ship with the code)."""
    revisions = [r for p in sorted(folder.glob("*.py")) if (r := _read_revision(p)) is not None]
    children = {r.down_revision: r for r in revisions}
    ordered: list[Revision] = []
    current = children.get(None)
    while current is not None:
        ordered.append(current)
        current = children.get(current.id)
    if len(ordered) != len(revisions):
        raise RuntimeError(
            f"the migration history in {folder} is not one linear chain "
            f"({len(ordered)} of {len(revisions)} revisions reachable from base)"
        )
    return History(tuple(ordered))
