"""SQLite's part of schema snapshots: dump a file's schema as SQL, describe it normalised.

The dump is SQLite's own text of each ``CREATE`` (``sqlite_master.sql``), which is
exactly what SQLite runs again, followed by the rows as ``INSERT`` statements. The
catalogue parses the same text into columns (in order) and constraint clauses
(sorted: batch rebuilds reorder foreign keys), and reads indexes, foreign keys and
rows through PRAGMAs and queries, so two databases built differently compare equal
when they have the same schema.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from flowdb.database.dialects.base import Catalog, progress_rows
from flowdb.database.dialects.sqlite.connecting import _READ_POLL_SECONDS, read_mode, use_wal
from flowdb.database.tables import BOOKKEEPING_VERSION_TABLE, PROGRESS_TABLE, VERSION_TABLE

_CONSTRAINT_START = re.compile(r"^(CONSTRAINT|PRIMARY\s+KEY|FOREIGN\s+KEY|UNIQUE|CHECK)\b", re.I)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the file that only reads (``sqlite.read_mode``: no stray WAL files)."""
    return sqlite3.connect(f"{path.as_uri()}?mode={read_mode(path)}", uri=True)


def literal(value: object) -> str:
    """A value read from SQLite as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _objects(connection: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    return list(
        connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        )
    )


def dump(path: Path, exclude: frozenset[str]) -> list[str]:
    """Every table and index (but those of ``exclude``), then every row, as statements."""
    connection = connect(path)
    try:
        objects = [o for o in _objects(connection) if o[2] not in exclude]
        statements = [sql for _, _, _, sql in objects]
        for kind, name, _, _ in objects:
            if kind != "table":
                continue
            for row in connection.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                values = ", ".join(literal(value) for value in row)
                statements.append(f'INSERT INTO "{name}" VALUES ({values})')
        return statements
    finally:
        connection.close()


def split_top_level(body: str) -> list[str]:
    """The comma-separated parts of a ``CREATE TABLE`` body, ignoring nested commas."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in body:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [" ".join(part.split()) for part in parts if part.strip()]


def _table(connection: sqlite3.Connection, name: str, sql: str) -> dict[str, Any]:
    body = sql[sql.index("(") + 1 : sql.rindex(")")]
    parts = split_top_level(body)
    definitions = [p for p in parts if not _CONSTRAINT_START.match(p)]
    constraints = sorted(p for p in parts if _CONSTRAINT_START.match(p))
    columns = [
        {"name": c[1], "type": c[2], "not_null": bool(c[3]), "default": c[4], "pk": c[5]}
        for c in connection.execute(f'PRAGMA table_xinfo("{name}")')
    ]
    foreign_keys = sorted(
        repr(tuple(row[2:]))  # table, from, to, on update, on delete, match
        for row in connection.execute(f'PRAGMA foreign_key_list("{name}")')
    )
    return {
        "columns": columns,
        "column_definitions": definitions,
        "constraints": constraints,
        "foreign_keys": foreign_keys,
    }


def catalogue(path: Path, skip_rows: frozenset[str]) -> dict[str, Any]:
    """The file's schema and rows, normalised for comparison."""
    connection = connect(path)
    try:
        tables: dict[str, Any] = {}
        indexes: dict[str, Any] = {}
        for kind, name, table, sql in _objects(connection):
            if kind == "table":
                tables[name] = _table(connection, name, sql)
            else:
                indexes[name] = {"table": table, "sql": " ".join(sql.split())}
        for name, description in tables.items():
            description["rows"] = (
                []
                if name in skip_rows
                else sorted(repr(row) for row in connection.execute(f'SELECT * FROM "{name}"'))
            )
        return {
            "tables": dict(sorted(tables.items())),
            "indexes": dict(sorted(indexes.items())),
        }
    finally:
        connection.close()


def run_script(path: Path, statements: list[str], timeout: float) -> None:
    """Run ``statements`` in one ``BEGIN IMMEDIATE`` transaction with sqlite3 (no SQLAlchemy)."""
    connection = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    try:
        use_wal(connection, round(timeout * 1000))
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                connection.execute(statement)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()


def read_catalog_once(path: Path) -> Catalog:
    """The tables and flowdb's rows of the file, in one read transaction (one snapshot)."""
    # A process killed inside a migration leaves a "hot" rollback journal beside the
    # file; the first reader must roll it back, which a read-only connection cannot
    # do ("attempt to write a readonly database"). Rolling back restores the last
    # committed revision, so reading then is both allowed and necessary; mode=rw
    # never creates a file.
    hot_journal = path.with_name(f"{path.name}-journal")
    hot = hot_journal.exists() and hot_journal.stat().st_size > 0
    mode = "rw" if hot else read_mode(path)
    connection = sqlite3.connect(
        f"{path.as_uri()}?mode={mode}", uri=True, timeout=_READ_POLL_SECONDS
    )
    try:
        # One read transaction: the listing and the rows are one snapshot of the file
        # (a migration's commit waits for it, or, in WAL mode, does not change it).
        connection.execute("BEGIN")
        tables = frozenset(
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        )
        in_progress: tuple[tuple[str, str, int], ...] = ()
        totals: tuple[tuple[str, int], ...] = ()
        if PROGRESS_TABLE in tables:
            # ``*``: a table an older flowdb created has no ``rows_total``.
            cursor = connection.execute(f"SELECT * FROM {PROGRESS_TABLE}")
            names = [column[0] for column in cursor.description]
            in_progress, totals = progress_rows(names, cursor.fetchall())
        bookkeeping: int | None = None
        if BOOKKEEPING_VERSION_TABLE in tables:  # so an upgrade at head needs no SQLAlchemy
            query = f"SELECT MAX(version) FROM {BOOKKEEPING_VERSION_TABLE}"
            found = connection.execute(query).fetchone()
            bookkeeping = None if found is None or found[0] is None else int(found[0])
        versions: list[str] | None = None
        if VERSION_TABLE in tables:
            rows = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}")
            versions = [row[0] for row in rows]
        return Catalog(
            versions=versions,
            tables=tables,
            in_progress=in_progress,
            totals=totals,
            bookkeeping=bookkeeping,
        )
    finally:
        connection.close()
