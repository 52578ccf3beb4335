"""The committed manifest of revision file hashes holds every revision file to its bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

from flowdb.database.fingerprints import (
    REGENERATE,
    manifest_path,
    manifest_problems,
    write_manifest,
)
from flowdb.database.history import MIGRATIONS_FOLDER, forget_history, load_history


def test_the_revision_files_match_the_committed_manifest() -> None:
    problems = [problem.text for problem in manifest_problems(load_history())]

    assert problems == [], "\n".join(problems)


def copied(tmp_path: Path) -> Path:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy / "versions"


def test_an_edited_revision_file_is_named_with_the_command_that_accepts_it(
    tmp_path: Path,
) -> None:
    versions = copied(tmp_path)
    history = load_history(versions)
    edited = history.revisions[3]
    edited.path.write_text(edited.path.read_text(encoding="utf-8") + "# later edit\n")

    problems = [problem.text for problem in manifest_problems(load_history(versions))]

    assert len(problems) == 1
    assert edited.id in problems[0] and edited.path.name in problems[0]
    assert "was edited" in problems[0] and REGENERATE in problems[0]


def test_a_new_revision_must_be_added_and_regenerating_accepts_it(tmp_path: Path) -> None:
    versions = copied(tmp_path)
    head = load_history(versions).head
    (versions / "2026_12_24_abcdefabcdef_new.py").write_text(
        f'"""New."""\n\nrevision = "abcdefabcdef"\ndown_revision = "{head}"\n'
    )
    forget_history()  # the copy's history was cached before the new file
    history = load_history(versions)
    before = manifest_path(history).read_text(encoding="utf-8")

    assert any("abcdefabcdef" in p.text for p in manifest_problems(history))
    write_manifest(history)
    after = manifest_path(history).read_text(encoding="utf-8")

    assert manifest_problems(history) == []
    # The total line changes and the new line is appended after the old head's: two
    # branches that each add a revision touch the same lines, so git reports a conflict.
    assert before.splitlines()[1] != after.splitlines()[1]
    assert after.splitlines()[:-1][2:] == before.splitlines()[2:]
    assert after.splitlines()[-1].startswith("abcdefabcdef ")
