"""Helpers for tests that talk to real databases (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get(
    "FLOWDB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIALECTS = ["sqlite", "postgresql"]


def create_postgres_database() -> str:
    """Create an empty database on the test server and return its URL."""
    name = f"flowdb_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test and is not reachable: {exc}")
    finally:
        admin.dispose()
    return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, disconnecting its sessions."""
    name = sa.make_url(url).database
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def sync_engine(url: str) -> sa.Engine:
    """A plain engine for test assertions (sync drivers, no flowdb behaviour)."""
    from flowdb.database.urls import parse_database_url

    return sa.create_engine(parse_database_url(url).sync_url, poolclass=sa.pool.NullPool)


def set_revision(url: str, revision: str) -> None:
    """Overwrite the recorded revision, as a newer flowdb would have left it."""
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        engine.dispose()


def schema_snapshot(url: str) -> dict[str, Any]:
    """Everything reflection can see of a database's schema, in a comparable form.

    Tables with their columns (type, nullability, default), primary keys, foreign keys
    (with ON DELETE), indexes, unique and check constraints; and PostgreSQL's enum types.
    Two databases with equal snapshots have the same schema for every purpose flowdb has.
    """
    engine = sync_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            tables[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table),
                "foreign_keys": sorted(
                    (repr(fk) for fk in inspector.get_foreign_keys(table)), key=str
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), i["unique"])
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "checks": sorted(
                    (str(c["name"]), c["sqltext"]) for c in inspector.get_check_constraints(table)
                ),
            }
        snapshot: dict[str, Any] = {"tables": tables}
        if engine.dialect.name == "postgresql":
            snapshot["enums"] = sorted(
                (e["name"], tuple(e["labels"]))
                for e in inspector.get_enums()  # type: ignore[attr-defined]
            )
        return snapshot
    finally:
        engine.dispose()
