"""PostgreSQL's part of schema snapshots: dump a schema as SQL, describe it normalised.

The dump is ``pg_dump``'s (schema and rows, as ``INSERT`` statements), without its
session settings, ownership and schema qualification, so that the snapshot runs in one
transaction in whatever schema the connection uses. The script is cut into statements
and unqualified on its tokens (``script``), never by editing its text. ``pg_dump`` is
needed only by the people who regenerate snapshots (``flowdb database snapshot``), never
to install one. The catalogue reads ``pg_catalog`` with PostgreSQL's own renderings
(``format_type``, ``pg_get_constraintdef``, ``pg_get_indexdef``), in sorted order.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from flowdb.database.dialects.base import Catalog
from flowdb.database.dialects.postgresql import script
from flowdb.errors import ConfigurationError, MigrationFailedError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection

#: Statements of the dump a snapshot leaves out: session settings and the schema itself.
_SESSION = (["SET"], ["SELECT", "PG_CATALOG", ".", "SET_CONFIG"], ["CREATE", "SCHEMA"])


def dump(url: URL, schema: str, exclude: frozenset[str]) -> list[str]:
    """``pg_dump`` of ``schema`` (but the tables of ``exclude``) as a list of statements."""
    program = shutil.which("pg_dump")
    if program is None:
        raise ConfigurationError(
            "pg_dump is needed to snapshot a PostgreSQL schema and is not on PATH; install "
            "the PostgreSQL client tools (e.g. apt-get install postgresql-client)."
        )
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    command = [
        program,
        f"--dbname={libpq}",
        f"--schema={schema}",
        "--no-owner",
        "--no-privileges",
        "--no-comments",
        "--inserts",
        # The tables, and the sequences of their serial columns.
        *(f"--exclude-table={schema}.{name}" for name in sorted(exclude)),
        *(f"--exclude-table={schema}.{name}_*_seq" for name in sorted(exclude)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MigrationFailedError(f"pg_dump failed: {' '.join(result.stderr.split())}")
    try:
        statements = script.statements(result.stdout)
    except script.ScriptError as exc:
        raise MigrationFailedError(f"pg_dump's output could not be read: {exc}") from exc
    return [
        script.text(script.unqualified(statement, schema))
        for statement in statements
        if not any(script.words(statement)[: len(kind)] == kind for kind in _SESSION)
    ]


def catalogue(connection: Connection, skip_rows: frozenset[str]) -> dict[str, Any]:
    """The current schema's tables, indexes, enum types and rows, normalised."""
    import sqlalchemy as sa

    def rows(query: str, **params: Any) -> list[Any]:
        return list(connection.execute(sa.text(query), params).all())

    # PostgreSQL names the schema in index definitions; a catalogue is schema-neutral
    # (like the dump), so that a database in a tenant schema compares equal.
    schema = str(connection.execute(sa.text("SELECT current_schema()")).scalar())

    def neutral(definition: str) -> str:
        return script.text(script.unqualified(script.tokens(definition), schema))

    namespace = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    tables: dict[str, Any] = {}
    for oid, name in rows(
        f"SELECT c.oid, c.relname FROM pg_class c WHERE c.relnamespace = {namespace} "
        "AND c.relkind IN ('r', 'p') ORDER BY c.relname"
    ):
        columns = [
            {"name": n, "type": t, "not_null": nn, "default": d, "identity": i}
            for n, t, nn, d, i in rows(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                "pg_get_expr(d.adbin, d.adrelid), a.attidentity FROM pg_attribute a "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum",
                oid=oid,
            )
        ]
        constraints = sorted(
            f"{n} {kind} {definition}"
            for n, kind, definition in rows(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = :oid",
                oid=oid,
            )
        )
        indexes = sorted(
            f"{n}: {neutral(definition)}"
            for n, definition in rows(
                "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = :oid",
                oid=oid,
            )
        )
        data = (
            []
            if name in skip_rows
            else sorted(repr(tuple(r)) for r in rows(f'SELECT * FROM "{name}"'))
        )
        tables[name] = {
            "columns": columns,
            "constraints": constraints,
            "indexes": indexes,
            "rows": data,
        }
    enums = {
        name: list(labels)
        for name, labels in rows(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t "
            f"JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = {namespace} "
            "GROUP BY t.typname ORDER BY t.typname"
        )
    }
    sequences = sorted(
        r[0]
        for r in rows(
            f"SELECT relname FROM pg_class WHERE relkind = 'S' AND relnamespace = {namespace}"
        )
    )
    return {"tables": tables, "enums": enums, "sequences": sequences}


def read_catalog_once(connection: Connection) -> Catalog:
    """The tables of the current schema, then flowdb's rows among them (one snapshot)."""
    import sqlalchemy as sa  # lazily: importing a dialect stays cheap

    tables = frozenset(
        connection.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
    )
    return Catalog.read_rows(connection, tables)
