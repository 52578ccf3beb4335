"""Databases made by every landed release (``releases.txt``) upgrade with today's flowdb.

* For each release and each dialect it supported: the release is installed from this
  repository's own git history (``git archive`` into a virtualenv cached under
  ``.cache/flowdb-test-releases/<commit>``), makes a database (its own upgrade to its
  head) and writes data with it (its API, or its models before it had one); today's
  ``upgrade``, ``current``, ``history`` and ``check`` then exit 0 without
  ``--accept-changed-revisions``, every row is still there and today's API reads them.
* A revision file that differs from its copy at a listed release fails unless the
  history declares the amendment (``migrations/amendments.toml``).
* A run record of the first shape (made before step 2 of ``bookkeeping``) is read by
  the read-only commands without writing, and upgraded by ``upgrade``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bench.releases import git, release_python

from flowdb.database import bookkeeping
from flowdb.database.fingerprints import declared, file_hash
from flowdb.database.history import load_history
from tests.cli.helpers import flowdb, ok
from tests.dbtools import revision_of, sync_engine

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASES = [
    line.split()[0]
    for line in (REPO_ROOT / "releases.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]
WRITER = Path(__file__).with_name("release_writer.py")
DATA_TABLES = ("flow", "flow_run", "task_run", "log")
VERSIONS = "src/flowdb/database/migrations/versions"


def _supports(commit: str, dialect: str) -> bool:
    """Whether the release ran on ``dialect``: MariaDB came with ``dialects/mysql.py``
    (a package, ``dialects/mysql/``, from the release after d43db95)."""
    if dialect != "mariadb":
        return True
    base = f"{commit}:src/flowdb/database/dialects"
    return any(
        git("cat-file", "-e", f"{base}/{path}").returncode == 0
        for path in ("mysql.py", "mysql/__init__.py")
    )


CASES = [
    pytest.param(commit, dialect, id=f"{commit}-{dialect}")
    for commit in RELEASES
    for dialect in ("sqlite", "postgresql", "mariadb")
    if _supports(commit, dialect)
]


def _run(
    python: Path | str, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


#: Runs its arguments one after the other in one interpreter, each as a program of its
#: own: ``flowdb <args>`` (``python -m flowdb``) or a script's path; after each, a line
#: ``#step# <exit code>``; stops at the first that fails. One interpreter start, and one
#: import of flowdb and its libraries, for several commands: each start costs a second
#: or two of a busy machine, and what is tested is each command's outcome. Runs on a
#: release's Python as well as today's (it imports nothing of flowdb's by itself).
SEQUENCE = """
import runpy, shlex, sys

for step in sys.argv[1:]:
    sys.argv = shlex.split(step)
    try:
        if sys.argv[0] == "flowdb":
            runpy.run_module("flowdb", run_name="__main__")
        else:
            runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as end:
        if end.code is None or isinstance(end.code, int):
            code = end.code or 0
        else:
            print(end.code, file=sys.stderr)
            code = 1
    sys.stderr.flush()
    print(f"\\n#step# {code}", flush=True)
    if code:
        sys.exit(code)
"""


def _steps(
    python: Path | str, steps: list[str], env: dict[str, str]
) -> tuple[list[tuple[str, int | None]], subprocess.CompletedProcess[str]]:
    """Each of ``steps`` with its exit code (``None``: not reached), and the run."""
    done = _run(python, ["-c", SEQUENCE, *steps], env)
    codes = [
        int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("#step# ")
    ]
    return [(step, codes[n] if n < len(codes) else None) for n, step in enumerate(steps)], done


def _counts(url: str) -> dict[str, int]:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())
                for table in DATA_TABLES
            }
    finally:
        engine.dispose()


@pytest.mark.releases
@pytest.mark.parametrize(("commit", "dialect"), CASES)
def test_a_database_of_each_release_upgrades_cleanly_and_keeps_its_rows(
    commit: str,
    dialect: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The release makes and fills a database; today's flowdb upgrades it, checks it, serves it."""
    url = str(request.getfixturevalue(f"{ {'postgresql': 'postgres'}.get(dialect, dialect) }_url"))
    python = release_python(commit)
    env = {**os.environ, "FLOWDB_DATABASE_URL": url, "FLOWDB_HOME": str(tmp_path / "home")}
    # The release's own upgrade to its head, then its writer: one interpreter (SEQUENCE).
    (made, wrote), run = _steps(python, ["flowdb database upgrade -y", str(WRITER)], env)
    assert made[1] == 0, f"upgrade -y: {run.stdout}{run.stderr}"
    assert wrote[1] == 0 and run.returncode == 0, f"writer: {run.stdout}{run.stderr}"
    written: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-2])
    before = _counts(url)
    assert all(before[table] >= 1 for table in DATA_TABLES), before

    # Today's upgrade, then the read-only commands at head (in this process): each must
    # exit 0.
    for command in ("upgrade -y", "current", "history", "check"):
        ok(flowdb(url, "database", *command.split(), home=tmp_path / "home"))
    assert revision_of(url) == load_history().head
    assert _counts(url) == before

    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
    with TestClient(create_app()) as client:
        flow = client.get(f"/api/flows/{written['flow']}")
        assert flow.status_code == 200 and flow.json()["name"] == "release-flow"
        run = client.get(f"/api/flow_runs/{written['flow_run']}").json()
        assert (run["name"], run["state_type"]) == ("release-run", "RUNNING")
        states = client.get(f"/api/flow_runs/{written['flow_run']}/states").json()
        assert [state["type"] for state in states][-2:] == ["PENDING", "RUNNING"]
        task = client.get(f"/api/task_runs/{written['task_run']}")
        assert task.status_code == 200 and task.json()["task_key"] == "release-task"
        logs = client.get("/api/logs", params={"flow_run_id": written["flow_run"]}).json()
        assert sorted(line["message"] for line in logs) == ["log 0", "log 1", "log 2"]


@pytest.mark.parametrize("commit", RELEASES)
def test_no_released_revision_file_changed_unless_the_amendment_is_declared(commit: str) -> None:
    """Each revision file at a listed release equals today's, or the history declares the change."""
    history = load_history()
    listing = git("ls-tree", "--name-only", commit, f"{VERSIONS}/")
    assert listing.returncode == 0, listing.stderr.decode()
    undeclared = []
    for name in listing.stdout.decode().split():
        released = git("show", f"{commit}:{name}")
        old = hashlib.sha256(released.stdout).hexdigest()
        revision = next(r for r in history.revisions if r.path.name == Path(name).name)
        now = file_hash(revision)
        if old != now and not declared(history, revision.id, old, now):
            undeclared.append(f"{revision.id} {old} -> {now}")
    assert not undeclared, (
        f"revision files changed since release {commit} without a declared amendment "
        f"(add them to migrations/amendments.toml with why): {undeclared}"
    )


def _set_applied_hash(url: str, revision: str, value: str) -> None:
    """Pretend ``revision`` was applied from a file with hash ``value`` (as a release's was)."""
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(f"UPDATE {bookkeeping.RUN_TABLE} SET file_hash = :h WHERE revision = :r"),
                {"h": value, "r": revision},
            )
    finally:
        engine.dispose()


def test_a_declared_amendment_is_accepted_and_an_undeclared_change_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The applied hash decides: a declared old hash passes without a flag, any other is refused."""
    from flowdb.database.fingerprints import amendments

    history = load_history()

    def database(*args: str) -> subprocess.CompletedProcess[str]:
        return flowdb(sqlite_url, "database", *args, home=tmp_path / "h")

    def flowdb_steps(*commands: str) -> None:
        """``commands`` one after the other, each of which must exit 0."""
        for command in commands:
            ok(database(*command.split()))

    # The newest revision with a declared amendment; the database goes up to head, then
    # back to it.
    declared = {a.revision: a.old for a in amendments(history)}
    below, head = [r for r in history.revisions if r.id in declared][-1], history.revisions[-1]
    released = declared[below.id]

    flowdb_steps("upgrade -y", f"downgrade -y -r {below.id}")
    _set_applied_hash(sqlite_url, below.id, released)
    upgraded = database("upgrade", "-y")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert revision_of(sqlite_url) == head.id
    flowdb_steps("check", f"downgrade -y -r {below.id}")
    _set_applied_hash(sqlite_url, below.id, "0" * 64)
    refused = database("upgrade", "-y")
    assert refused.returncode == 10, refused.stdout + refused.stderr
    assert below.id in refused.stderr + refused.stdout
    assert revision_of(sqlite_url) == below.id
    assert database("check").returncode == 1


def test_a_first_shape_run_record_is_read_without_writing_and_upgraded(
    database_url: str, tmp_path: Path
) -> None:
    """A run record without step 2's columns: current/history/check cope, upgrade adds them."""

    def database(*args: str) -> subprocess.CompletedProcess[str]:
        return flowdb(database_url, "database", *args, home=tmp_path / "h")

    assert database("upgrade", "-y").returncode == 0
    engine = sync_engine(database_url)
    try:
        with engine.begin() as connection:  # back to the shape of a build before step 2
            connection.exec_driver_sql(f"DROP TABLE {bookkeeping.VERSION_TABLE}")
            for column in ("down_revision", "serves_previous_code"):
                connection.exec_driver_sql(
                    f"ALTER TABLE {bookkeeping.RUN_TABLE} DROP COLUMN {column}"
                )
        before = [c["name"] for c in sa.inspect(engine).get_columns(bookkeeping.RUN_TABLE)]
        for reader in ("current", "history", "check"):  # read-only: each must exit 0
            ok(database(reader))
        inspector = sa.inspect(engine)
        assert [c["name"] for c in inspector.get_columns(bookkeeping.RUN_TABLE)] == before
        assert not inspector.has_table(bookkeeping.VERSION_TABLE)

        upgraded = database("upgrade", "-y")
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        inspector = sa.inspect(engine)
        names = {c["name"] for c in inspector.get_columns(bookkeeping.RUN_TABLE)}
        assert {"down_revision", "serves_previous_code"} <= names
        with engine.connect() as connection:
            version = (
                connection.exec_driver_sql(f"SELECT version FROM {bookkeeping.VERSION_TABLE}")
                .scalars()
                .all()
            )
        assert version == [bookkeeping.LATEST]
    finally:
        engine.dispose()
    assert database("check").returncode == 0
