"""MariaDB's and MySQL's part of schema snapshots: dump a schema as SQL, describe it normalised.

The dump is the server's own ``SHOW CREATE TABLE`` text of each table (columns, keys,
foreign keys and checks in one statement), made rerunnable with ``IF NOT EXISTS`` and
without the table's ``AUTO_INCREMENT`` counter, followed by its rows as ``INSERT``
statements. Both edits are at known places of the server's text (its first words, its
table options), never a search over the whole statement. Every DDL statement commits by
itself on these servers, so a fresh install is not one transaction: it is a list of
statements that a rerun completes (``fresh``). The catalogue is the same text cut into
lines, columns in order and keys, foreign keys and checks sorted (their order follows
how the table was built), plus the rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from flowdb.database.dialects.base import Catalog
from flowdb.errors import MigrationFailedError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")
_CREATE = "CREATE TABLE "
_COLUMN = re.compile(r'^\s*"')


def table_names(connection: Connection) -> list[str]:
    """The base tables of the connection's database, by name."""
    import sqlalchemy as sa

    query = (
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    return list(connection.execute(sa.text(query)).scalars())


def create_text(connection: Connection, table: str) -> str:
    """``SHOW CREATE TABLE`` of ``table`` without its ``AUTO_INCREMENT`` counter."""
    import sqlalchemy as sa

    row = connection.execute(sa.text(f'SHOW CREATE TABLE "{table}"')).one()
    # The counter is a table option: on the last line (after the columns' closing
    # parenthesis), before any quoted option value, so no default or comment is touched.
    body, _, options = str(row[1]).rpartition("\n")
    settings, quote, quoted = options.partition("'")
    return f"{body}\n{_AUTO_INCREMENT.sub('', settings)}{quote}{quoted}"


def row_inserts(connection: Connection, table: str) -> list[str]:
    """One ``INSERT`` per row of ``table``, with the driver's own literals, in key order."""
    import sqlalchemy as sa

    raw: Any = connection.connection.dbapi_connection
    result = connection.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY 1'))
    names = result.keys()
    columns = ", ".join(f'"{name}"' for name in names)
    return [
        f'INSERT INTO "{table}" ({columns}) VALUES ({", ".join(raw.escape(v) for v in row)})'
        for row in result
    ]


def dump(connection: Connection, exclude: frozenset[str]) -> list[str]:
    """Each table (but ``exclude``) as a rerunnable ``CREATE``, then its rows."""
    statements: list[str] = []
    for table in table_names(connection):
        if table in exclude:
            continue
        create = create_text(connection, table)
        if not create.startswith(_CREATE):
            raise MigrationFailedError(f"SHOW CREATE TABLE {table} gave {create[:40]!r}")
        statements.append(f"CREATE TABLE IF NOT EXISTS {create[len(_CREATE) :]}")
        statements.extend(row_inserts(connection, table))
    return statements


def catalogue(connection: Connection, skip_rows: frozenset[str]) -> dict[str, Any]:
    """Every table's columns (in order), keys and constraints (sorted), options, and rows."""
    import sqlalchemy as sa

    tables: dict[str, Any] = {}
    rows: dict[str, list[list[str]]] = {}
    for table in table_names(connection):
        lines = [line.strip().rstrip(",") for line in create_text(connection, table).splitlines()]
        body, options = lines[1:-1], lines[-1]
        tables[table] = {
            "columns": [line for line in body if _COLUMN.match(line)],
            "keys and constraints": sorted(line for line in body if not _COLUMN.match(line)),
            "options": options,
        }
        if table not in skip_rows:
            result = connection.execute(sa.text(f'SELECT * FROM "{table}"'))
            rows[table] = sorted([repr(value) for value in row] for row in result)
    return {"tables": tables, "rows": rows}


def read_catalog_once(connection: Connection) -> Catalog:
    """The base tables, then the rows of flowdb's progress and version tables among them."""
    import sqlalchemy as sa

    tables = frozenset(
        connection.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "DATABASE() AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')"
            )
        ).scalars()
    )
    return Catalog.read_rows(connection, tables)
