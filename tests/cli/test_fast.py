"""The fast path (``flowdb.cli.fast``): which argv it takes, and that it says what Typer says.

``python -m flowdb`` (the console script's ``main``) runs ``database upgrade`` and
``database current`` without building the Typer app; ``flowdb.cli.root.main`` always
builds it. Both are run here on the same database and must print the same bytes on
stdout and stderr (times aside) and exit with the same code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flowdb.cli.fast import command_for, parse
from tests import forkserver

TYPER_PATH = "import sys\nfrom flowdb.cli.root import main\nmain()\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["database", "upgrade"], ("upgrade", {})),
        (["database", "upgrade", "-y"], ("upgrade", {"yes": True})),
        (
            ["database", "upgrade", "--yes", "--json", "-r", "-1"],
            ("upgrade", {"yes": True, "as_json": True, "revision": "-1"}),
        ),
        (["database", "upgrade", "--revision=+2"], ("upgrade", {"revision": "+2"})),
        (
            ["database", "upgrade", "--contract-now", "--accept-changed-revisions"],
            ("upgrade", {"contract_now": True, "accept_changed": True}),
        ),
        (["database", "current"], ("current", {})),
        (["database", "current", "--json"], ("current", {"as_json": True})),
    ],
)
def test_the_commands_it_runs(argv: list[str], expected: tuple[str, dict[str, object]]) -> None:
    assert parse(argv) == expected
    assert command_for(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["--version"],
        ["database"],
        ["database", "--help"],
        ["database", "upgrade", "--help"],
        ["database", "upgrade", "--dry-run"],
        ["database", "upgrade", "-r"],  # the value is missing: Typer's usage error
        ["database", "upgrade", "-yr", "head"],
        ["database", "upgrade", "-y", "-y"],
        ["database", "upgrade", "--yes=1"],
        ["database", "upgrade", "--", "-y"],
        ["database", "upgrade", "extra"],
        ["database", "current", "-y"],
        ["database", "downgrade", "-y"],
        ["database", "history"],
        ["server", "start"],
    ],
)
def test_everything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None
    assert command_for(argv) is None


def _run(fast: bool, url: str, home: Path, *args: str) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    environment.update({"FLOWDB_DATABASE_URL": url, "FLOWDB_HOME": str(home)})
    prefix = ["-m", "flowdb"] if fast else ["-c", TYPER_PATH]
    # Forked from the fork server: what is compared is what each path says, not its start.
    result = forkserver.run([*prefix, *args], env=environment, timeout=120)
    return result.returncode, _untimed(result.stdout), _untimed(result.stderr)


def _untimed(text: str) -> str:
    text = re.sub(r"\d+\.\d+ s\b", "<t> s", text)
    return re.sub(r'"(seconds|duration_ms)": [\d.]+', r'"\1": <t>', text)


def _both(url: str, home: Path, *args: str) -> tuple[int, str, str]:
    fast = _run(True, url, home, *args)
    typer = _run(False, url, home, *args)
    assert fast == typer, f"flowdb {' '.join(args)}:\nfast:  {fast}\ntyper: {typer}"
    return fast


def _forget(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_fast_and_typer_paths_say_the_same_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "same.db"
    url = f"sqlite:///{path}"
    home = tmp_path / "home"

    # An empty database, no terminal, no -y: the plan, then the refusal (exit 4 or so).
    code, out, err = _run(True, url, home, "database", "upgrade")
    assert code != 0 and err.startswith("Error: Refusing to continue without confirmation")
    assert (code, out, err) == _run(False, url, home, "database", "upgrade")
    _forget(path)

    # A fresh install, once per path on the same (removed again) file.
    fresh = _run(True, url, home, "database", "upgrade", "-y")
    _forget(path)
    assert fresh == _run(False, url, home, "database", "upgrade", "-y")
    assert fresh[0] == 0 and "Installed the head schema" in fresh[2]

    code, out, _ = _both(url, home, "database", "upgrade", "-y")
    assert code == 0 and out.startswith("Nothing to upgrade")
    code, out, _ = _both(url, home, "database", "upgrade", "-y", "--json")
    assert code == 0 and '"command": "upgrade"' in out
    code, out, _ = _both(url, home, "database", "current")
    assert code == 0 and "Status: at head" in out
    code, out, _ = _both(url, home, "database", "current", "--json")
    assert code == 0 and '"at_head": true' in out
    code, out, err = _both(url, home, "database", "upgrade", "-y", "--revision=nosuch")
    assert code == 2 and out == "" and "nosuch" in err
    code, out, err = _both(url, home, "database", "upgrade", "-y", "--json", "-r", "nosuch")
    assert code == 2 and '"exit_code": 2' in out


def test_fast_and_typer_paths_say_the_same_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _, err = _run(True, postgres_url, home, "database", "upgrade", "-y")
    assert code == 0, err
    code, out, _ = _both(postgres_url, home, "database", "upgrade", "-y")
    assert code == 0 and out.startswith("Nothing to upgrade")
    code, out, _ = _both(postgres_url, home, "database", "current", "--json")
    assert code == 0 and '"at_head": true' in out
