"""Start-up cost: help and version never load Alembic, SQLAlchemy or a database driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: Packages that only commands doing database work may import.
HEAVY = (
    "alembic",
    "sqlalchemy",
    "psycopg",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "fastapi",
    "uvicorn",
)

#: Runs the Typer app in-process with ARGV, then reports what it printed and imported.
PROBE = """
import contextlib, io, json, sys
from flowdb.cli.root import app

argv = json.loads(sys.argv[1])
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        app(argv)
    except SystemExit as exit:
        code = exit.code
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"code": code, "output": out.getvalue(), "loaded": loaded}))
"""


def probe(argv: list[str]) -> dict[str, object]:
    """Invoke ``flowdb ARGV`` in a fresh interpreter; return exit code, output and imports."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], ["database", "server", "--version"]),
        (["server", "start", "--help"], ["--host", "--port", "--workers"]),
        (["database", "--help"], ["upgrade", "downgrade", "revision", "stamp", "reset", "check"]),
        (["database", "upgrade", "--help"], ["--revision", "--yes", "--dry-run"]),
        (["database", "downgrade", "--help"], ["--revision", "default: -1"]),
    ],
)
def test_help_loads_no_database_code(argv: list[str], expected: list[str]) -> None:
    report = probe(argv)

    assert report["code"] == 0
    output = str(report["output"])
    for word in expected:
        assert word in output, f"{word!r} missing from the help of {argv}:\n{output}"
    loaded = set(report["loaded"])  # type: ignore[arg-type]
    assert "typer" in loaded  # the probe did load the CLI
    assert not loaded & set(HEAVY), f"{argv} imported {sorted(loaded & set(HEAVY))}"


def test_version_loads_no_database_code() -> None:
    from flowdb import __version__

    report = probe(["--version"])

    assert report["code"] in (0, None)
    assert str(report["output"]).strip() == f"flowdb {__version__}"
    assert not set(report["loaded"]) & set(HEAVY)  # type: ignore[arg-type]


def test_the_real_entry_point_imports_nothing_heavy_for_help() -> None:
    # -X importtime lists every module the interpreter imported, on stderr.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flowdb", "database", "--help"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "upgrade" in result.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "flowdb" in imported and "typer" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_a_fresh_sqlite_install_imports_neither_alembic_nor_sqlalchemy(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment["FLOWDB_DATABASE_URL"] = f"sqlite:///{folder / 'fresh.db'}"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flowdb", "database", "upgrade", "-y"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "Installed the head schema" in result.stderr  # the snapshot, not a replay
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "sqlite3" in imported
    assert not imported & {"alembic", "sqlalchemy"}, sorted(imported & {"alembic", "sqlalchemy"})


#: Runs the console script's ``main`` with ``--version``, noting which SIGTERM handler is
#: in place when the first heavy-ish package (Typer) starts importing.
ENTRY_PROBE = """
import importlib.abc, json, signal, sys

seen = {}


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "typer" and "typer" not in seen:
            seen["typer"] = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        return None


sys.meta_path.insert(0, Watch())
sys.argv = ["flowdb", "--version"]
from flowdb.cli.entry import main

try:
    main()
except SystemExit:
    pass
print(json.dumps(seen))
"""


def test_the_console_script_handles_signals_before_it_imports_the_cli() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["flowdb"] == "flowdb.cli.entry:main"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    result = subprocess.run(
        [sys.executable, "-c", ENTRY_PROBE],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"typer": True}, result.stdout


def imported_by(args: list[str], url: str) -> set[str]:
    """The top-level packages ``python -m flowdb ARGS`` imports on ``url`` (-X importtime)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment["FLOWDB_DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flowdb", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


#: What a read of SQLite at head, or an upgrade with nothing to do, must not import.
NOT_AT_HEAD = {"alembic", "sqlalchemy", "pydantic_settings", "asyncio", "mako"}
#: What the fast path (``flowdb.cli.fast``) never builds or converts with.
NOT_ON_THE_FAST_PATH = {"typer", "click", "pydantic", "pydantic_core"}
#: Everything besides the standard library that the fast path may import, per command.
FAST_PATH_PACKAGES = {
    "upgrade": {"flowdb", "rich", "filelock"},
    "current": {"flowdb", "rich"},
    "--json": {"flowdb"},
}
#: Names -X importtime lists that are no package: its header, site hooks, a Jython probe.
NOT_PACKAGES = {"imported package", "sitecustomize", "usercustomize", "org"}


def test_upgrade_and_current_at_head_on_sqlite_import_no_sqlalchemy(tmp_path: object) -> None:
    """The pinned sets: sqlite3 reads the catalogue, the run record and the bookkeeping."""
    from pathlib import Path

    url = f"sqlite:///{Path(str(tmp_path)) / 'head.db'}"
    imported_by(["database", "upgrade", "-y"], url)  # a fresh install (pinned above)

    upgrade = imported_by(["database", "upgrade", "-y"], url)
    current = imported_by(["database", "current"], url)
    current_json = imported_by(["database", "current", "--json"], url)

    for name, imported in (("upgrade", upgrade), ("current", current), ("--json", current_json)):
        assert "sqlite3" in imported, name
        assert not imported & NOT_AT_HEAD, (name, sorted(imported & NOT_AT_HEAD))
        assert not imported & NOT_ON_THE_FAST_PATH, (name, sorted(imported & NOT_ON_THE_FAST_PATH))
        others = {n for n in imported - NOT_PACKAGES if n not in sys.stdlib_module_names}
        others -= {n for n in others if n.startswith("_")}
        assert others == FAST_PATH_PACKAGES[name], (name, sorted(others))
    assert current <= upgrade | {"rich"}, sorted(current - upgrade)


def test_a_fresh_install_imports_no_pydantic_settings(tmp_path: object) -> None:
    from pathlib import Path

    imported = imported_by(
        ["database", "upgrade", "-y"], f"sqlite:///{Path(str(tmp_path)) / 'fresh.db'}"
    )
    assert not imported & NOT_AT_HEAD, sorted(imported & NOT_AT_HEAD)
    assert not imported & NOT_ON_THE_FAST_PATH, sorted(imported & NOT_ON_THE_FAST_PATH)
    others = {n for n in imported - NOT_PACKAGES if n not in sys.stdlib_module_names}
    assert {n for n in others if not n.startswith("_")} == FAST_PATH_PACKAGES["upgrade"]
