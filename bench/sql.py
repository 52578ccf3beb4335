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
    """The same statements as one offline transaction, the way migrations ran before.

    flowdb's BEGIN/COMMIT lines (one transaction per migration, and per phase of an
    online migration) go, and concurrent index builds become plain ones, which a
    transaction can hold.
    """
    kept = [line for line in sql.splitlines() if line.strip() not in ("BEGIN;", "COMMIT;")]
    text = "\n".join(kept) + "\n"
    return text.replace(" INDEX CONCURRENTLY ", " INDEX ")


def write_script(folder: Path, name: str, sql: str) -> Path:
    """Save ``sql`` for ``bench.floor`` to run."""
    path = folder / name
    path.write_text(sql, encoding="utf-8")
    return path
