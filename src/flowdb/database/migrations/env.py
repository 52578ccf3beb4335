"""Alembic environment for flowdb: runs the migrations online or prints their SQL offline.

flowdb's commands (``flowdb.database.alembic_commands``) put what this script needs
into ``config.attributes``:

* ``database``: the parsed ``DatabaseUrl``;
* ``connection``: optionally, a sync connection to run on (the caller owns it);
* ``on_step``: optionally, a callback told about each applied migration.

Every migration runs in its own transaction (``transaction_per_migration``), together
with its ``alembic_version`` update, so a process killed at any moment leaves the
database at the last revision that committed, with exactly that revision's schema.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from flowdb.database.migrations.helpers import include_in_comparison

config = context.config
database = config.attributes["database"]
on_step = config.attributes.get("on_step")


def _target_metadata() -> Any:
    # Only autogenerate and `check` compare against the models; importing them is
    # the one place migration tooling touches the ORM.
    from flowdb.database.orm_models import Base

    return Base.metadata


def _common_options() -> dict[str, Any]:
    return {
        "target_metadata": _target_metadata(),
        "transaction_per_migration": True,
        # SQLite's DDL is transactional too once flowdb controls BEGIN (see engines.py);
        # Alembic assumes otherwise unless told.
        "transactional_ddl": True,
        "render_as_batch": database.is_sqlite,
        "compare_type": True,
        "include_object": include_in_comparison,
        "on_version_apply": on_step,
    }


def run_migrations_offline() -> None:
    """Emit the SQL of the requested migrations on the output buffer; touch no database."""
    context.configure(
        url=database.sync_url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_common_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or on a fresh one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from flowdb.database.engines import create_sync_engine

    engine = create_sync_engine(database, application_name="flowdb-migrate")
    try:
        with engine.connect() as fresh_connection:
            _run_on(fresh_connection)
    finally:
        engine.dispose()


def _run_on(connection: Any) -> None:
    context.configure(connection=connection, **_common_options())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
