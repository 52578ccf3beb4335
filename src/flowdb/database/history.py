"""The migration history read straight from the revision files, without importing Alembic.

Start-up paths (``ensure_schema``, ``flowdb database current``, the server's readiness
check) only need to know the revision ids and which one is head. Importing Alembic
and loading every revision module costs far more than reading a dozen small files,
so this module reads the ``revision`` / ``down_revision`` assignments as text. A test
checks that it agrees with Alembic's own ``ScriptDirectory``.

The history must be one linear chain. Anything else (a file copied under a new name,
a revision that names itself or a descendant as its parent, two revisions with one
parent, a file that is not valid Python) is a ``BrokenHistoryError`` naming the files,
raised before any command touches a database.
"""

from __future__ import annotations

import functools
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from flowdb.errors import BrokenHistoryError

#: The Alembic script folder (env.py, the template, versions/); tests point it at a copy.
MIGRATIONS_FOLDER = Path(__file__).parent / "migrations"
#: The revision files shipped with this flowdb.
VERSIONS_FOLDER = MIGRATIONS_FOLDER / "versions"

_ASSIGNMENT = re.compile(
    r"^(?P<name>revision|down_revision)\s*(?::[^=]+)?=\s*(?P<value>None|['\"][^'\"]*['\"])",
    re.MULTILINE,
)
_DOCSTRING_TITLE = re.compile(r'^"""(?P<title>[^\n]*)', re.MULTILINE)
_SERVES_PREVIOUS_CODE = re.compile(
    r"^SERVES_PREVIOUS_CODE\s*(?::[^=]+)?=\s*(True|False)", re.MULTILINE
)
_PHASE = re.compile(r"^PHASE\s*(?::[^=]+)?=\s*['\"](expand|contract)['\"]", re.MULTILINE)
_CREATE_TABLE = re.compile(r"""op\.create_table\(\s*["'](?P<name>\w+)["']""")


@dataclass(frozen=True)
class Revision:
    """One migration: its id, its parent's id (``None`` for the first), title and file.

    ``creates`` names the tables its upgrade creates (read from the file's text; a test
    checks it against the SQL Alembic renders), for the name-clash check before an
    upgrade and for telling flowdb's tables from other applications'.
    """

    id: str
    down_revision: str | None
    title: str
    path: Path
    creates: tuple[str, ...] = ()
    #: Whether the previous revision's code can keep serving on this one's schema
    #: (``None``: not declared; the lint gate requires it).
    serves_previous_code: bool | None = None
    #: The ``PHASE`` the file declares (``"expand"`` or ``"contract"``), ``None`` when it
    #: declares none (the released revisions, whose phase is derived: ``phase``).
    declared_phase: str | None = None

    @property
    def phase(self) -> str:
        """``"expand"`` (the previous release keeps serving) or ``"contract"`` (it cannot).

        Declared by ``PHASE`` in newer files; derived from ``SERVES_PREVIOUS_CODE`` in the
        released ones (``True``: expand; ``False`` or undeclared: contract, the safe side).
        """
        if self.declared_phase is not None:
            return self.declared_phase
        return "expand" if self.serves_previous_code else "contract"

    @property
    def serves_previous(self) -> bool | None:
        """What the run record keeps for older servers: declared, else what ``PHASE`` says."""
        if self.serves_previous_code is not None:
            return self.serves_previous_code
        if self.declared_phase is not None:
            return self.declared_phase == "expand"
        return None


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

    def get(self, revision_id: str) -> Revision:
        """The revision with id ``revision_id`` (``KeyError`` when unknown)."""
        return self.revisions[self.position(revision_id) - 1]

    def position(self, revision_id: str | None) -> int:
        """How many revisions are applied when the database is at ``revision_id``."""
        if revision_id is None:
            return 0
        for index, revision in enumerate(self.revisions):
            if revision.id == revision_id:
                return index + 1
        raise KeyError(revision_id)

    def at(self, position: int) -> str | None:
        """The revision id after ``position`` revisions are applied (``None`` = base)."""
        return self.revisions[position - 1].id if position else None

    def pending(self, revision_id: str | None) -> tuple[Revision, ...]:
        """The revisions an upgrade to head would apply from ``revision_id``."""
        return self.revisions[self.position(revision_id) :]

    def first_contract(self, revisions: tuple[Revision, ...]) -> int | None:
        """The index in ``revisions`` of the first contract revision, or ``None``."""
        return next((i for i, r in enumerate(revisions) if r.phase == "contract"), None)

    def tables_at(self, revision_id: str | None) -> frozenset[str]:
        """The tables a database at ``revision_id`` has (tables are never dropped upward)."""
        applied = self.revisions[: self.position(revision_id)]
        return frozenset(name for revision in applied for name in revision.creates)

    @property
    def all_tables(self) -> frozenset[str]:
        """Every table name flowdb's history creates."""
        return self.tables_at(self.head)


def _read_revision(path: Path) -> Revision | None:
    text = path.read_text(encoding="utf-8")
    values = {m["name"]: m["value"] for m in _ASSIGNMENT.finditer(text)}
    if "revision" not in values:
        return None
    _check_python(path, text)
    down = values.get("down_revision", "None")
    title = _DOCSTRING_TITLE.search(text)
    upgrade_body = text.partition("def upgrade")[2].partition("def downgrade")[0]
    serves = _SERVES_PREVIOUS_CODE.search(text)
    phase = _PHASE.search(text)
    return Revision(
        id=values["revision"].strip("'\""),
        down_revision=None if down == "None" else down.strip("'\""),
        # A one-line docstring ends on its title's line: its closing quotes are no title.
        title=title["title"].strip().removesuffix('"""').strip() if title else "",
        path=path,
        creates=tuple(m["name"] for m in _CREATE_TABLE.finditer(upgrade_body)),
        serves_previous_code=serves[1] == "True" if serves else None,
        declared_phase=phase[1] if phase else None,
    )


def _check_python(path: Path, text: str) -> None:
    """Raise ``BrokenHistoryError`` unless ``path`` is valid Python.

    Compiling every file costs more than the rest of reading the history, on every
    command: a file whose bytecode cache matches it (Python's own check: the source's
    mtime and size in the ``.pyc`` header) compiled before and is not compiled again.
    Otherwise it is compiled, and the cache written where Python would write it.
    """
    if _compiled_before(path):
        return
    try:
        code = compile(text, str(path), "exec")
    except (SyntaxError, ValueError) as exc:
        raise BrokenHistoryError(
            f"The revision file {path} is not valid Python ({exc}); fix or delete that file."
        ) from None
    if not sys.dont_write_bytecode:
        _write_cache(path, code)


def _compiled_before(path: Path) -> bool:
    """Whether the bytecode cache of ``path`` was made from the file as it is now."""
    from importlib.util import MAGIC_NUMBER, cache_from_source

    try:
        with open(cache_from_source(str(path)), "rb") as cached:
            header = cached.read(16)
        found = path.stat()
    except (OSError, NotImplementedError, ValueError):
        return False
    fields = [int.from_bytes(header[at : at + 4], "little") for at in (4, 8, 12)]
    return (
        len(header) == 16
        and header[:4] == MAGIC_NUMBER
        and fields == [0, int(found.st_mtime) & 0xFFFFFFFF, found.st_size & 0xFFFFFFFF]
    )


def _write_cache(path: Path, code: CodeType) -> None:
    """Write ``code`` as the timestamp-checked ``.pyc`` of ``path`` (where it can be written)."""
    import marshal
    import os
    from importlib.util import MAGIC_NUMBER, cache_from_source

    try:
        found = path.stat()
        target = Path(cache_from_source(str(path)))
        header = MAGIC_NUMBER + b"".join(
            (value & 0xFFFFFFFF).to_bytes(4, "little")
            for value in (0, int(found.st_mtime), found.st_size)
        )
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(header + marshal.dumps(code))
        partial.replace(target)  # atomic: a concurrent reader sees all of it or none
    except (OSError, NotImplementedError, ValueError):
        pass


def order_revisions(revisions: list[Revision]) -> tuple[Revision, ...]:
    """Order ``revisions`` from base to head; raise ``BrokenHistoryError`` unless linear."""
    by_id: dict[str, list[Revision]] = defaultdict(list)
    children: dict[str | None, list[Revision]] = defaultdict(list)
    for revision in revisions:
        by_id[revision.id].append(revision)
        children[revision.down_revision].append(revision)

    def files(items: list[Revision]) -> str:
        return ", ".join(item.path.name for item in items)

    for revision_id, same in by_id.items():
        if len(same) > 1:
            raise BrokenHistoryError(
                f"Revision {revision_id} is defined by {len(same)} files ({files(same)}); "
                "delete the copy or give it a new revision id."
            )
    for revision in revisions:
        if revision.down_revision == revision.id:
            raise BrokenHistoryError(
                f"Revision {revision.id} ({revision.path.name}) names itself as its parent; "
                "set its down_revision to the revision before it."
            )
    for parent, siblings in children.items():
        if len(siblings) > 1:
            raise BrokenHistoryError(
                f"The history forks: {files(siblings)} all follow {parent or 'base'}; "
                "make one of them follow the other (set its down_revision)."
            )
    ordered: list[Revision] = []
    current = children[None][0] if children[None] else None
    while current is not None:
        ordered.append(current)
        following = children.get(current.id)
        current = following[0] if following else None
    if len(ordered) != len(revisions):
        stray = [r for r in revisions if r not in ordered]
        raise BrokenHistoryError(
            f"The revision file(s) {files(stray)} are not reachable from the first revision "
            "(a cycle, or a parent that does not exist); fix their down_revision."
        )
    return tuple(ordered)


def load_history(folder: Path | None = None) -> History:
    """Read and order the revisions in ``folder`` (default: ``MIGRATIONS_FOLDER``'s versions).

    Cached per folder: the files ship with the code (``forget_history`` after writing one).
    """
    return _load(folder if folder is not None else MIGRATIONS_FOLDER / "versions")


@functools.cache
def _load(folder: Path) -> History:
    revisions = [r for p in sorted(folder.glob("*.py")) if (r := _read_revision(p)) is not None]
    return History(order_revisions(revisions))


def forget_history() -> None:
    """Drop the cached histories, so the next ``load_history`` reads the files again."""
    _load.cache_clear()
