"""The fingerprints of the migration files, and the committed manifest that lists them.

Each revision file is identified by the SHA-256 of its bytes. ``manifest.sum`` beside
``env.py`` lists them in history order, under a ``total`` line that hashes the whole
list (in the spirit of Atlas's ``atlas.sum``):

* a test compares the files with the manifest, so a revision edited after it was
  released fails CI with a message naming the file and the command that accepts it;
* two branches that each add a revision both change the ``total`` line and both append
  after the same last line, so git reports a conflict instead of merging a fork.

``flowdb database manifest`` rewrites it. Only hashlib and the text of the files are
used here: no SQLAlchemy, no Alembic, so the fast paths can afford it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowdb.database.history import History, Revision

MANIFEST_NAME = "manifest.sum"
REGENERATE = "flowdb database manifest"
_HEADER = f"# flowdb migration manifest; regenerate with `{REGENERATE}`; never edit by hand"


def file_hash(revision: Revision) -> str:
    """The SHA-256 (hex) of the revision's file, as it is on disk now."""
    stat = revision.path.stat()
    return _hash(revision.path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _hash(path: Path, mtime_ns: int, size: int) -> str:
    """Cached per file version (path, modification time, size): hashed once per process."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def history_hash(history: History) -> str:
    """One SHA-256 over every revision (id and file hash) in order: the history's identity."""
    digest = hashlib.sha256()
    for revision in history.revisions:
        digest.update(f"{revision.id} {file_hash(revision)}\n".encode())
    return digest.hexdigest()


def manifest_path(history: History) -> Path:
    """Where the manifest of ``history`` lives: beside its versions folder."""
    if history.revisions:
        return history.revisions[0].path.parent.parent / MANIFEST_NAME
    from flowdb.database.history import MIGRATIONS_FOLDER

    return MIGRATIONS_FOLDER / MANIFEST_NAME


def render_manifest(history: History) -> str:
    """The manifest's text for ``history`` as it is on disk now."""
    lines = [_HEADER, f"total {history_hash(history)}"]
    lines += [f"{r.id} {file_hash(r)} {r.path.name}" for r in history.revisions]
    return "\n".join(lines) + "\n"


def write_manifest(history: History) -> Path:
    """Rewrite the manifest from the files (after adding or, knowingly, changing one)."""
    path = manifest_path(history)
    path.write_text(render_manifest(history), encoding="utf-8")
    return path


@dataclass(frozen=True)
class ManifestProblem:
    """One way the files and the manifest disagree."""

    text: str


def manifest_problems(history: History) -> list[ManifestProblem]:
    """Every disagreement between the revision files and the committed manifest."""
    path = manifest_path(history)
    if not path.exists():
        return [ManifestProblem(f"{path} is missing; create it with `{REGENERATE}`.")]
    listed: dict[str, tuple[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            listed[fields[0]] = (fields[1], fields[2])
    problems = []
    for revision in history.revisions:
        if revision.id not in listed:
            problems.append(
                ManifestProblem(
                    f"revision {revision.id} ({revision.path.name}) is not in {path.name}; "
                    f"add it with `{REGENERATE}`."
                )
            )
        elif listed[revision.id][0] != file_hash(revision):
            problems.append(
                ManifestProblem(
                    f"revision {revision.id} ({revision.path.name}) differs from the file "
                    f"recorded in {path.name}: a released migration was edited. Undo the edit "
                    f"(databases that applied it would not get it), or, if it changes nothing a "
                    f"database sees, accept it with `{REGENERATE}`."
                )
            )
    for revision_id, (_, name) in listed.items():
        if not history.knows(revision_id):
            problems.append(
                ManifestProblem(
                    f"{path.name} lists revision {revision_id} ({name}), which has no file; "
                    f"restore the file or run `{REGENERATE}`."
                )
            )
    if not problems:
        total = next(
            (
                line.split()[1]
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.startswith("total ")
            ),
            "",
        )
        if total != history_hash(history):
            problems.append(
                ManifestProblem(
                    f"the total line of {path.name} does not match its revisions (an unresolved "
                    f"merge?); run `{REGENERATE}`."
                )
            )
    return problems


AMENDMENTS_NAME = "amendments.toml"


@dataclass(frozen=True)
class Amendment:
    """A declared change of a released revision file: its hash as released, now, and why."""

    revision: str
    old: str
    new: str
    why: str


def amendments_path(history: History) -> Path:
    """Where the history's declared amendments live: beside the manifest."""
    return manifest_path(history).with_name(AMENDMENTS_NAME)


def amendments(history: History) -> tuple[Amendment, ...]:
    """The amendments the history declares (none when the file is absent)."""
    return _read_amendments(amendments_path(history))


@functools.lru_cache(maxsize=8)
def _read_amendments(path: Path) -> tuple[Amendment, ...]:
    """Parsed once per process: the file ships with the package and never changes under it."""
    import tomllib

    if not path.exists():
        return ()
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("amendment", [])
    return tuple(
        Amendment(str(e["revision"]), str(e["old"]), str(e["new"]), str(e["why"])) for e in entries
    )


def declared(history: History, revision: str, applied: str, now: str) -> bool:
    """Whether the history declares the change of ``revision``'s file from ``applied`` to ``now``.

    Amendments chain: a file amended twice since a release reaches ``now`` through both.
    """
    steps: dict[str, set[str]] = {}
    for amendment in amendments(history):
        if amendment.revision == revision:
            steps.setdefault(amendment.old, set()).add(amendment.new)
    reached, frontier = {applied}, [applied]
    while frontier:
        for following in steps.get(frontier.pop(), set()) - reached:
            reached.add(following)
            frontier.append(following)
    return now in reached and applied != now
