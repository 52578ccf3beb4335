"""The light history reader agrees with Alembic, and the history itself is well formed."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory

from flowdb.database.alembic_commands import alembic_config
from flowdb.database.history import VERSIONS_FOLDER, load_history
from flowdb.database.migrations import helpers
from flowdb.errors import BrokenHistoryError

#: The only flowdb code a migration may use: models and column types change over time,
#: while a migration must keep meaning what it meant when it was written.
ALLOWED_FLOWDB_IMPORTS = ("flowdb.database.migrations",)


def alembic_scripts() -> list[Script]:
    """Alembic's view of the history, from the first revision to head."""
    script_directory = ScriptDirectory.from_config(alembic_config())
    return list(reversed(list(script_directory.walk_revisions())))


def revision_files() -> list[Path]:
    return sorted(path for path in VERSIONS_FOLDER.glob("*.py") if path.name != "__init__.py")


def test_history_agrees_with_alembic() -> None:
    history = load_history()
    scripts = alembic_scripts()
    script_directory = ScriptDirectory.from_config(alembic_config())

    assert [r.id for r in history.revisions] == [s.revision for s in scripts]
    assert [r.down_revision for r in history.revisions] == [s.down_revision for s in scripts]
    assert history.head == script_directory.get_current_head()
    for revision, script in zip(history.revisions, scripts, strict=True):
        assert revision.title == script.longdoc.strip().splitlines()[0], revision.id


def test_history_is_linear_and_long_enough() -> None:
    history = load_history()
    script_directory = ScriptDirectory.from_config(alembic_config())

    assert len(history.revisions) >= 12
    assert len({r.id for r in history.revisions}) == len(history.revisions)
    assert history.revisions[0].down_revision is None
    for parent, child in zip(history.revisions, history.revisions[1:], strict=False):
        assert child.down_revision == parent.id
    assert script_directory.get_heads() == [history.head]
    assert script_directory.get_bases() == [history.revisions[0].id]
    for script in alembic_scripts():
        assert not script.branch_labels, script.revision
        assert not script.dependencies, script.revision
        assert not script.is_merge_point and not script.is_branch_point, script.revision


def test_every_revision_file_is_in_the_history_with_a_title() -> None:
    history = load_history()
    files = revision_files()
    assert len(files) == len(history.revisions)
    for script in alembic_scripts():
        assert f"_{script.revision}_" in Path(script.path).name
    for revision in history.revisions:
        assert revision.title.strip(), revision.id
        assert not revision.title.startswith(("Revision ID", '"""')), revision.id


def test_a_branch_in_the_history_is_detected(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_FOLDER, versions, ignore=shutil.ignore_patterns("__pycache__"))
    middle = load_history().revisions[5].id
    (versions / "2026_12_01_ffffffffffff_branch.py").write_text(
        f'"""A second child of {middle}."""\n\n'
        'revision: str = "ffffffffffff"\n'
        f'down_revision: str | None = "{middle}"\n',
        encoding="utf-8",
    )
    with pytest.raises(BrokenHistoryError, match="forks"):
        load_history(versions)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (``from a import b`` counts ``a.b`` too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("path", revision_files(), ids=lambda path: path.name[:23])
def test_migrations_never_import_the_models(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "orm_models" not in text
    assert "column_types" not in text
    flowdb_imports = {m for m in imported_modules(path) if m.split(".")[0] == "flowdb"}
    assert all(m.startswith(ALLOWED_FLOWDB_IMPORTS) for m in flowdb_imports), flowdb_imports


def test_migration_helpers_never_import_the_models() -> None:
    # Helpers may ask the dialect modules for dialect SQL and report progress events;
    # nothing that changes with the models (models, column types) may reach a migration.
    path = Path(helpers.__file__)
    flowdb_imports = {m for m in imported_modules(path) if m.split(".")[0] == "flowdb"}
    allowed = ("flowdb.database.dialects", "flowdb.database.events")
    assert all(m.startswith(allowed) for m in flowdb_imports), flowdb_imports
    assert "orm_models" not in path.read_text(encoding="utf-8")
    code = (
        "import sys\n"
        "import flowdb.database.migrations.helpers\n"
        "print(sorted(m for m in sys.modules if m.startswith('flowdb.database.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "orm_models" not in result.stdout
    assert "column_types" not in result.stdout


def test_reading_the_history_does_not_import_alembic() -> None:
    code = (
        "import sys\n"
        "from flowdb.database.history import load_history\n"
        "history = load_history()\n"
        "print(len(history.revisions), 'alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(load_history().revisions)), "False"]


def test_a_revision_file_is_compiled_again_when_it_no_longer_matches_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytecode cache spares the compile only for the file it was made from."""
    import os

    from flowdb.database.history import forget_history

    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_FOLDER, versions, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    forget_history()
    assert load_history(versions).head == load_history().head
    cached = sorted((versions / "__pycache__").glob("*.pyc"))
    assert len(cached) == len(load_history().revisions)  # written where Python would
    # Python's own import accepts the cache as its own: a cache it rejected it would
    # write again (bytecode writing is on), changing its mtime.
    stamp = cached[0].stat().st_mtime_ns
    load = (
        "import importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('probe', sys.argv[1]); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )
    first = str(sorted(versions.glob("*.py"))[0])
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", load, first], check=True, env=environment)
    assert cached[0].stat().st_mtime_ns == stamp

    broken = next(versions.glob(f"*_{load_history().head}_*.py"))
    text = broken.read_text(encoding="utf-8")
    broken.write_text(text + "\ndef (:\n", encoding="utf-8")  # longer: its size changed
    forget_history()
    with pytest.raises(BrokenHistoryError, match="not valid Python"):
        load_history(versions)
    forget_history()
