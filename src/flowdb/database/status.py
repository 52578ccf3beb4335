"""Where a database stands: its revision, whether it is flowdb's, how far from head.

Read without Alembic and without writing anything (``Dialect.read_catalog``), so
start-up checks, ``flowdb database current`` and dry-runs never create a SQLite file
or take a lock, and never block silently behind one.

Whose database is it? flowdb's when it is empty or at a revision of flowdb's history.
A version row flowdb does not know means a newer flowdb migrated it when flowdb's
own tables are there, and another application's database when they are not. Tables
with flowdb's names but no version row are another application's, too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flowdb.database.tables import PROGRESS_TABLE, VERSION_TABLE
from flowdb.errors import DatabaseNewerThanCodeError, ForeignDatabaseError

if TYPE_CHECKING:
    from flowdb.database.dialects.base import Catalog

    # What this module needs of a target.Database, without importing it (no cycle).
    from flowdb.database.handle import DatabaseHandle as Database
    from flowdb.database.history import History

#: The tables whose presence tells a newer flowdb's database from another application's.
CORE_TABLES = frozenset({"flow", "flow_run"})
#: The flag that lets reset and stamp act on another application's database.
TAKE_OVER_FLAG = "--take-over-foreign-database"

__all__ = ["PROGRESS_TABLE", "VERSION_TABLE", "SchemaStatus", "status_from_catalog"]

Owner = Literal["empty", "flowdb", "newer", "foreign"]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands relative to this flowdb's migration history."""

    current: str | None
    head: str | None
    owner: Owner
    tables: frozenset[str]
    pending: int
    #: For a foreign database: what gives it away (for the message).
    foreign_because: str = ""
    #: Migrations part way through: ``(revision, phase, rows done)``.
    in_progress: tuple[tuple[str, str, int], ...] = ()
    #: Rows a migration part way through has in all, where its progress row says so.
    totals: tuple[tuple[str, int], ...] = ()
    #: The version of flowdb's own tables when the catalog read it (SQLite), else ``None``.
    bookkeeping: int | None = None

    def describe_progress(self) -> str:
        """``5f3c7a9d2b18 (phase backfill, 120,000 of 1,000,000 rows done)``, or ``""``.

        The total shows where the progress row records it (a backfill of this flowdb).
        """
        totals = dict(self.totals)

        def rows_of(revision: str, rows: int) -> str:
            total = totals.get(revision)
            return f"{rows:,} rows done" if total is None else f"{rows:,} of {total:,} rows done"

        return "; ".join(
            f"{revision} (phase {phase}, {rows_of(revision, rows)})"
            for revision, phase, rows in self.in_progress
        )

    @property
    def known(self) -> bool:
        """Whether the revision (if any) is part of this flowdb's history."""
        return self.owner in ("empty", "flowdb")

    @property
    def at_head(self) -> bool:
        """Whether the database is at the newest revision this code knows."""
        return self.known and self.current == self.head

    def require_known(self, database: Database, take_over: bool = False) -> None:
        """Raise unless this flowdb can work with the database.

        ``take_over`` accepts another application's database (for reset and stamp,
        which then treat its tables with flowdb's names as flowdb's).
        """
        if self.owner == "newer":
            raise DatabaseNewerThanCodeError(
                f"{_capital(database.describe())} is at revision {self.current}, which this "
                "flowdb does not know (it was probably upgraded by a newer flowdb); run that "
                "newer flowdb against it, or downgrade it with that version first."
            )
        if self.owner == "foreign" and not take_over:
            raise ForeignDatabaseError(
                f"{_capital(database.describe())} is not flowdb's ({self.foreign_because}); "
                "point FLOWDB_DATABASE_URL at a database of flowdb's own, or, for reset and "
                f"stamp only, pass {TAKE_OVER_FLAG} to let flowdb overwrite it."
            )


def status_from_catalog(catalog: Catalog, history: History) -> SchemaStatus:
    """Judge a catalog against the history: current revision, owner, pending count."""
    versions = catalog.versions or []
    ours = catalog.tables & history.all_tables
    if len(versions) > 1:
        return SchemaStatus(
            current=None,
            head=history.head,
            owner="foreign",
            tables=catalog.tables,
            pending=0,
            foreign_because=f"it is stamped with several revisions ({', '.join(sorted(versions))}),"
            " but flowdb's history is linear",
        )
    current = versions[0] if versions else None
    if current is not None and not history.knows(current):
        if catalog.tables >= CORE_TABLES:
            owner: Owner = "newer"
            because = ""
        else:
            owner = "foreign"
            because = f"its {VERSION_TABLE} holds {current!r}, which is no revision of flowdb's"
        return SchemaStatus(current, history.head, owner, catalog.tables, 0, because)
    expected = history.tables_at(current)
    if current is None and catalog.versions is None and ours:
        names = ", ".join(sorted(ours))
        because = f"it has table(s) named like flowdb's ({names}) but no {VERSION_TABLE}"
        return SchemaStatus(None, history.head, "foreign", catalog.tables, 0, because)
    owner = "empty" if current is None and not (ours - expected) else "flowdb"
    pending = len(history.pending(current))
    return SchemaStatus(
        current,
        history.head,
        owner,
        catalog.tables,
        pending,
        in_progress=catalog.in_progress,
        totals=catalog.totals,
        bookkeeping=catalog.bookkeeping,
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
