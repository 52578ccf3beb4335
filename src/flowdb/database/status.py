"""Reading a database's revision cheaply, without Alembic and without writing anything.

Used by start-up checks, ``flowdb database current`` and dry-runs, which must not
create a SQLite file or take any lock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from flowdb.database.engines import translated_errors
from flowdb.database.history import History, load_history
from flowdb.database.urls import DatabaseUrl
from flowdb.errors import DatabaseNewerThanCodeError

VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands relative to this flowdb's migration history."""

    current: str | None
    head: str | None
    known: bool

    @property
    def at_head(self) -> bool:
        """Whether the database is at the newest revision this code knows."""
        return self.current == self.head

    @property
    def pending(self) -> int:
        """How many revisions an upgrade to head would apply (0 when unknown)."""
        if not self.known:
            return 0
        return len(load_history().pending(self.current))


def read_current_revision(database: DatabaseUrl) -> str | None:
    """The revision stamped in ``alembic_version``, or ``None`` for an empty database.

    Never creates or modifies anything: a missing SQLite file reads as empty.
    """
    with translated_errors(database):
        if database.is_sqlite:
            return _read_sqlite_revision(database)
        return _read_server_revision(database)


def schema_status(database: DatabaseUrl, history: History | None = None) -> SchemaStatus:
    """Compare the database's revision with the history shipped in this code."""
    history = history or load_history()
    current = read_current_revision(database)
    known = current is None or history.knows(current)
    return SchemaStatus(current=current, head=history.head, known=known)


def require_known_revision(status: SchemaStatus, database: DatabaseUrl) -> None:
    """Raise ``DatabaseNewerThanCodeError`` when the database was migrated by a newer flowdb."""
    if not status.known:
        raise DatabaseNewerThanCodeError(
            f"The database at {database.redacted()} is at revision {status.current}, which this "
            "flowdb does not know (it was probably upgraded by a newer flowdb); run that newer "
            "flowdb against it, or downgrade it with that version first."
        )


def _read_sqlite_revision(database: DatabaseUrl) -> str | None:
    path = database.sqlite_path
    if path is None or not path.exists():
        return None
    # A process killed inside a migration leaves a "hot" rollback journal beside the
    # file; the first reader must roll it back, which a read-only connection cannot do
    # ("attempt to write a readonly database"). Rolling back restores the last committed
    # revision, so reading then is both allowed and necessary; mode=rw never creates.
    hot_journal = path.with_name(f"{path.name}-journal")
    mode = "rw" if hot_journal.exists() and hot_journal.stat().st_size > 0 else "ro"
    connection = sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, timeout=30)
    try:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
        ).fetchone()
        if not exists:
            return None
        return _single_revision([row[0] for row in connection.execute(_SELECT_VERSION)])
    finally:
        connection.close()


def _read_server_revision(database: DatabaseUrl) -> str | None:
    import sqlalchemy as sa

    from flowdb.database.engines import create_sync_engine

    engine = create_sync_engine(database, application_name="flowdb-status")
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT to_regclass(:name)"), {"name": VERSION_TABLE}
            )
            if exists.scalar() is None:
                return None
            rows = connection.execute(sa.text(_SELECT_VERSION)).scalars().all()
            return _single_revision(list(rows))
    finally:
        engine.dispose()


_SELECT_VERSION = f"SELECT version_num FROM {VERSION_TABLE}"


def _single_revision(rows: list[str]) -> str | None:
    if not rows:
        return None
    if len(rows) > 1:
        raise DatabaseNewerThanCodeError(
            f"The database is stamped with several revisions ({', '.join(sorted(rows))}), but "
            "flowdb's history is linear; stamp it with one revision (flowdb database stamp REV)."
        )
    return rows[0]
