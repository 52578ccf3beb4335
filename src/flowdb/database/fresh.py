"""Fresh installs in constant time: an empty database gets the head schema from a snapshot.

Replaying every revision costs about the same per revision, so replay time grows with
the history for ever. For an empty database upgraded to head, flowdb instead runs the
per-dialect snapshot shipped in ``snapshots/<dialect>.sql``: the head schema (and the
rows the history inserts), Alembic's version table, flowdb's run record, the version
row, and one ``fresh install`` row per revision, all in one transaction under the
migration lock. A process killed part way leaves the database empty. Where every DDL
statement commits by itself (MariaDB, MySQL) there is no such transaction: the install
is marked part way through first, every ``CREATE`` is ``IF NOT EXISTS``, a failure
drops what was built, and the next upgrade completes a killed install.

The snapshots are never written by hand. ``flowdb database snapshot`` replays the
history on an empty database of the dialect and dumps what it built; each snapshot
names the head and the hash of the history it was made from (``fingerprints``). A
snapshot whose history hash is not the installed history's is not used (the upgrade
replays), and a test fails until it is regenerated; the same test rebuilds a database
from each snapshot and compares it, normalised (``Dialect.catalogue``), with a
replayed one, naming the first difference.

Nothing here imports Alembic, and on SQLite nothing imports SQLAlchemy either, so a
fresh install costs little more than starting the CLI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdb.database import bookkeeping, journal
from flowdb.database.bookkeeping import (
    ALEMBIC_VERSION_TABLE,
    FRESH_INSTALL_PHASE,
    PROGRESS_TABLE,
    RUN_TABLE,
)
from flowdb.database.dialects.base import first_line
from flowdb.database.events import FreshInstalled, StepDone
from flowdb.database.fingerprints import file_hash, history_hash
from flowdb.errors import (
    FlowdbError,
    MigrationFailedError,
    MigrationLockLostError,
    one_line_message,
)

if TYPE_CHECKING:
    from flowdb.database.history import History
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

#: Where the snapshots live; tests point it at a copy.
SNAPSHOT_FOLDER = Path(__file__).parent / "snapshots"
#: Tables the snapshot creates ``IF NOT EXISTS`` and without rows: they may exist already
#: in an empty database (at base after a downgrade) and are flowdb's bookkeeping.
BOOKKEEPING = frozenset(
    {ALEMBIC_VERSION_TABLE, RUN_TABLE, bookkeeping.VERSION_TABLE, bookkeeping.REPLICA_TABLE}
)
REGENERATE = "flowdb database snapshot"
_SEPARATOR = ";\n\n"

logger = logging.getLogger("flowdb.migrations")


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file: the head it installs, the history it was made from, its SQL."""

    path: Path
    head: str
    history_hash: str
    statements: tuple[str, ...]

    def fits(self, history: History) -> bool:
        """Whether it was made from exactly this history (same files, same head)."""

        return self.head == history.head and self.history_hash == history_hash(history)


def snapshot_path(database: Database) -> Path:
    """The snapshot file of the database's dialect."""
    return SNAPSHOT_FOLDER / f"{database.dialect.name}.sql"


def read_snapshot(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, or ``None`` when there is none."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- ") and not body:
            key, _, value = line[3:].partition(": ")
            header[key] = value.strip()
        else:
            body.append(line)
    parts = "\n".join(body).split(_SEPARATOR)
    statements = tuple(s.strip().rstrip(";").rstrip() for s in parts if s.strip())
    return Snapshot(path, header.get("head", ""), header.get("history", ""), statements)


def usable_snapshot(database: Database) -> Snapshot | None:
    """The dialect's snapshot when it was made from the installed history, else ``None``."""
    snapshot = read_snapshot(snapshot_path(database))
    if snapshot is None or not snapshot.fits(database.history):
        return None
    return snapshot


def why_not_usable(database: Database) -> str:
    """Why the dialect's snapshot cannot install this history's head (for the replay's line)."""
    path = snapshot_path(database)
    snapshot = read_snapshot(path)
    if snapshot is None:
        return f"flowdb has no snapshot for {database.dialect.label} ({path.name})"
    if snapshot.head != database.history.head:
        return (
            f"the snapshot {path.name} installs {snapshot.head or 'no named head'}, but the "
            f"history's head is {database.history.head}; regenerate it with `{REGENERATE}`"
        )
    return (
        f"the revision files differ from those the snapshot {path.name} was made from; "
        f"regenerate it with `{REGENERATE}`"
    )


def install_statements(database: Database, snapshot: Snapshot, runs: bool = True) -> list[str]:
    """The whole fresh install: the snapshot, the version row and (``runs``) the run record.

    Where every DDL statement commits by itself (``Features.ddl_commits``), the install
    is first marked part way through (``FRESH_INSTALL_PHASE``) and every ``CREATE`` is ``IF NOT
    EXISTS``, so a rerun completes a killed install; the version row, the run record
    and the mark's removal are the last statements and commit together.
    """

    # The snapshot's run record has the newest shape (an older one was upgraded first);
    # its version's CREATE comes with the other DDL, so that where DDL commits by itself
    # the rows below still commit together at the end.
    statements = [
        *snapshot.statements,
        *bookkeeping.version_statements(),
        f"INSERT INTO {ALEMBIC_VERSION_TABLE} VALUES ('{snapshot.head}')",
    ]
    if runs:
        at = journal.now()
        rows = [
            journal.started(r.id, journal.FRESH_INSTALL, at, 0.0, file_hash=file_hash(r), source=r)
            for r in database.history.revisions
        ]
        statements.append(journal.insert_sql(rows, database.dialect.current_user_sql()))
    if not database.dialect.features.ddl_commits:
        return statements
    forget = f"DELETE FROM {PROGRESS_TABLE} WHERE revision = '{snapshot.head}'"
    mark = (
        f"INSERT INTO {PROGRESS_TABLE} (revision, phase, rows_done, updated) "
        f"VALUES ('{snapshot.head}', '{FRESH_INSTALL_PHASE}', 0, CURRENT_TIMESTAMP)"
    )
    # The mark commits with the first CREATE after it; the drop commits the last rows.
    return [
        bookkeeping.CREATE_PROGRESS,
        forget,
        mark,
        *statements,
        forget,
        f"DROP TABLE {PROGRESS_TABLE}",
    ]


def interrupted(status: SchemaStatus) -> bool:
    """Whether ``status`` shows a fresh install that was killed part way through."""
    return status.current is None and any(
        phase == FRESH_INSTALL_PHASE for _, phase, _ in status.in_progress
    )


def resumes(database: Database, status: SchemaStatus) -> bool:
    """Whether ``status`` is an interrupted fresh install of this history's head."""
    return status.current is None and status.in_progress == (
        (database.history.head, FRESH_INSTALL_PHASE, 0),
    )


def install(database: Database, snapshot: Snapshot) -> float:
    """Create the head schema from ``snapshot``; the caller holds the lock. Returns seconds.

    A failure is recorded (in a transaction of its own) and raised; the database stays
    empty. A lost lock is raised alone: the lock's new holder may be at work already.
    """

    started = time.perf_counter()
    at = journal.now()
    undone = "was undone" if database.dialect.features.ddl_commits else "was rolled back"
    try:
        try:
            with database.errors():
                try:
                    database.dialect.run_script(install_statements(database, snapshot))
                except MigrationLockLostError:
                    raise  # the lock's new holder owns the database now: write nothing more
                except Exception:
                    if database.dialect.features.ddl_commits and not undo(database):
                        undone = "stopped part way (the next upgrade completes it)"
                    raise
        except FlowdbError:
            raise
        except Exception as exc:
            raise MigrationFailedError(
                f"The fresh install from {snapshot.path.name} failed ({first_line(exc)}) and "
                f"{undone}; {database.describe()} is still empty. Regenerate the "
                f"snapshot with `{REGENERATE}` if it was edited."
            ) from exc
    except MigrationLockLostError:
        raise
    except FlowdbError as exc:
        run = journal.started(
            snapshot.head,
            journal.FRESH_INSTALL,
            at,
            time.perf_counter() - started,
            error=one_line_message(exc),
        )
        journal.record_apart(database, [run])
        raise
    elapsed = time.perf_counter() - started
    # Each revision is now in the database, as after a replay; reported as such (with
    # no time of its own: they landed together), then the install with its duration.
    for revision in database.history.revisions:
        event = StepDone("upgrade", revision.id, revision.title, None)
        logger.info("Installed %s %s", revision.id, revision.title, extra={"event": event})
    how = (
        "statement by statement" if database.dialect.features.ddl_commits else "in one transaction"
    )
    count = len(database.history.revisions)
    logger.info(
        "Installed the head schema %s from the snapshot %s (%d revisions, %.2f s)",
        snapshot.head,
        how,
        count,
        elapsed,
        extra={"event": FreshInstalled(snapshot.head, count, how, elapsed)},
    )
    return elapsed


def undo(database: Database) -> bool:
    """Drop what a failed install built where DDL commits by itself: the database was empty.

    Only an empty database or an interrupted fresh install is installed on, so the head
    schema's tables, the version table and the progress mark are all the install's own.
    Returns whether it worked; if not (the server went away, say), the mark stays and the
    next upgrade completes the install, so the first failure is the one reported.
    """
    tables = [*sorted(database.history.all_tables), ALEMBIC_VERSION_TABLE, PROGRESS_TABLE]
    try:
        database.dialect.run_script(database.dialect.drop_statements(tables, ()))
    except Exception as exc:
        logger.warning("Could not drop the failed fresh install's tables: %s", exc)
        return False
    return True


def render(database: Database, snapshot: Snapshot) -> str:
    """The SQL a fresh install runs (for ``--dry-run``), without the run record's rows."""
    body = _SEPARATOR.join(install_statements(database, snapshot, runs=False))
    if database.dialect.features.ddl_commits:
        return (
            f"-- Fresh install of {snapshot.head} from {snapshot.path.name}, statement by "
            "statement (each CREATE commits by itself; a rerun completes an interrupted "
            f"install)\n{body};\n"
        )
    return (
        f"-- Fresh install of {snapshot.head} from {snapshot.path.name}, in one transaction\n"
        f"BEGIN{_SEPARATOR}{body}{_SEPARATOR}COMMIT;\n"
    )


def bookkeeping_statements(database: Database) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` of Alembic's version table and the run record."""
    import sqlalchemy as sa
    from sqlalchemy.schema import CreateTable

    dialect = sa.create_mock_engine(database.dialect.sync_url, lambda *a, **k: None).dialect
    return [
        str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip()
        for table in (bookkeeping.alembic_version_table(), bookkeeping.run_table())
    ]


def write_snapshot(database: Database) -> Path:
    """Dump ``database`` (freshly replayed to head) as its dialect's snapshot file.

    ``commands.make_snapshot`` does the replay first; this only dumps and writes.
    """

    with database.errors():
        statements = [
            *bookkeeping_statements(database),
            *database.dialect.dump_schema(BOOKKEEPING),
        ]
    history = database.history
    header = [
        f"-- flowdb schema snapshot for {database.dialect.label}; generated by "
        f"`{REGENERATE}`, never edit by hand",
        f"-- head: {history.head}",
        f"-- history: {history_hash(history)}",
        f"-- revisions: {len(history.revisions)}",
    ]
    path = snapshot_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = [s.rstrip().rstrip(";") for s in statements]
    # Statements are read back by cutting at the separator: one that holds it (in a
    # string, say) would come back in pieces, so it is refused rather than written.
    for statement in cut:
        if _SEPARATOR in statement:
            raise MigrationFailedError(
                f"A statement of the snapshot holds {_SEPARATOR!r}, which separates "
                f"statements in the file: {statement.splitlines()[0]}"
            )
    body = _SEPARATOR.join(cut)
    path.write_text("\n".join(header) + "\n" + body + ";\n", encoding="utf-8")
    return path


def catalogue(database: Database) -> dict[str, Any]:
    """The database's normalised catalogue (the run record's rows left out: they differ)."""
    with database.errors():
        return database.dialect.catalogue(frozenset({RUN_TABLE}))


def first_difference(expected: Any, actual: Any, where: str = "") -> str | None:
    """The first place where two catalogues differ, as one line; ``None`` when equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            inner = f"{where}.{key}" if where else str(key)
            if key not in actual:
                return f"{inner}: missing (replaying the history has it: {expected[key]!r})"
            if key not in expected:
                return f"{inner}: extra (replaying the history has no such thing: {actual[key]!r})"
            found = first_difference(expected[key], actual[key], inner)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for index, (left, right) in enumerate(zip(expected, actual, strict=False)):
            found = first_difference(left, right, f"{where}[{index}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{where}: {len(actual)} item(s), replaying the history gives {len(expected)}"
        return None
    if expected != actual:
        return f"{where}: {actual!r}, replaying the history gives {expected!r}"
    return None
