"""Capturing flowdb's dry-run SQL, to be replayed as the floor of a case."""

from __future__ import annotations

from pathlib import Path

from bench.common import PYTHON, run
from bench.databases import flowdb_env


def dry_run_sql(url: str, span: str) -> str:
    """The SQL ``flowdb database upgrade --dry-run -r SPAN`` prints for ``url``'s dialect."""
    return run(
        [PYTHON, "-m", "flowdb", "database", "upgrade", "--dry-run", "-r", span],
        env=flowdb_env(url),
    ).stdout


def single_transaction(sql: str) -> str:
    """The same statements without flowdb's per-migration BEGIN/COMMIT lines."""
    kept = [line for line in sql.splitlines() if line.strip() not in ("BEGIN;", "COMMIT;")]
    return "\n".join(kept) + "\n"


def write_script(folder: Path, name: str, sql: str) -> Path:
    """Save ``sql`` for ``bench.floor`` to run."""
    path = folder / name
    path.write_text(sql, encoding="utf-8")
    return path
