"""Alembic environment for flowdb: runs the migrations online or prints their SQL offline.

flowdb's runner (``flowdb.database.runner``) puts what this script needs into
``config.attributes``; run by Alembic's own CLI instead, ``interop.PlainRun`` builds it:

* ``database``: the ``Database`` being migrated (URL, settings, dialect);
* ``on_step``: optionally, a callback told about each applied migration;
* ``offline_url``: optionally, for SQL previews, a URL of another dialect to render for.

Every migration runs in its own transaction (``transaction_per_migration``), together
with its ``alembic_version`` update, so a process killed at any moment leaves the
database at the last revision that committed, with exactly that revision's schema.

Every transaction on the migration connection is fenced by the migration lock
(``Dialect.fence``): it takes the fence and checks that the lock is still held as it
begins, and (where DDL is transactional) once more before the migration commits, so a
command whose lock session ended stops between steps and a new holder never overlaps
it (ARCHITECTURE.md, "Fencing").
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from alembic import context

from flowdb import interrupts
from flowdb.database.bookkeeping import ALEMBIC_VERSION_TABLE
from flowdb.database.dialects import dialect_class
from flowdb.database.migrations import restartable
from flowdb.database.orm_models import Base
from flowdb.database.schema_check import include_in_comparison

config = context.config
plain: Any = None
if "database" in config.attributes and not config.attributes.get("flowdb_plain_run"):
    database = config.attributes["database"]
else:  # run by Alembic's own CLI (an ini from `flowdb database alembic-ini`), not flowdb's runner
    from flowdb.database.interop import PlainRun

    plain = PlainRun.start(config, context)
    database = plain.database
on_step = config.attributes.get("on_step")


def _target_metadata() -> Any:
    # Only autogenerate and `check` compare against the models; importing them is
    # the one place migration tooling touches the ORM.

    return Base.metadata


def _common_options(render_as_batch: bool) -> dict[str, Any]:
    return {
        "target_metadata": _target_metadata(),
        "transaction_per_migration": True,
        # SQLite's DDL is transactional too once flowdb controls BEGIN (see its dialect);
        # Alembic assumes otherwise unless told.
        "transactional_ddl": True,
        "render_as_batch": render_as_batch,
        "compare_type": True,
        "include_object": include_in_comparison,
        "on_version_apply": on_step,
        "version_table": ALEMBIC_VERSION_TABLE,
    }


def run_migrations_offline() -> None:
    """Emit the SQL of the requested migrations on the output buffer; touch no database."""

    url = config.attributes.get("offline_url") or database.dialect.sync_url
    dialect = dialect_class(url.get_backend_name())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_common_options(render_as_batch=dialect is not None and dialect.features.render_as_batch),
    )
    with context.begin_transaction():
        context.run_migrations()


def _restartable_options() -> dict[str, Any]:
    """Where DDL commits by itself: guarded operations, a record of the migration running."""
    if not database.dialect.features.ddl_commits:
        return {}

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        if step.is_upgrade:
            restartable.unmark(ctx.connection, step.up_revision_id)
        else:
            reached = step.down_revision_ids[0] if step.down_revision_ids else None
            target = config.attributes.get("target")
            restartable.downgrade_step_done(ctx.connection, step.up_revision_id, reached, target)
        if on_step is not None:
            on_step(ctx=ctx, step=step, heads=heads, run_args=run_args)

    return {"flowdb_config": config, "on_version_apply": on_version_apply}


def _stop_between_transactions(connection: Any) -> None:
    """Before each transaction of the migrations begins, stop if a signal was received.

    Each migration (and each batch of a data migration) begins its own transaction, so
    a Ctrl-C whose exception a finaliser swallowed still ends the run at the next step,
    with every finished step committed.
    """
    import sqlalchemy as sa

    sa.event.listen(connection, "begin", lambda _connection: interrupts.check())


def _fenced_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check the lock before a migration commits, where that commit is its whole work.

    Where DDL commits by itself the migration's work is done by then; its version row
    commits (the fence keeps everyone else out) and the next migration's start stops.
    """
    if database.dialect.features.ddl_commits:
        return options
    then = options.get("on_version_apply")

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        if step.is_upgrade:
            before = step.down_revision_ids[0] if step.down_revision_ids else None
        else:
            before = step.up_revision_id
        database.dialect.check_lock(
            ctx.connection.connection.dbapi_connection, rolled_back=True, where=before or "base"
        )
        if then is not None:
            then(ctx=ctx, step=step, heads=heads, run_args=run_args)

    return {**options, "on_version_apply": on_version_apply}


def run_migrations_online() -> None:
    """Run the migrations on a fresh connection of flowdb's migration engine.

    Run by Alembic's own CLI, the run is guarded as flowdb's commands are (``interop``):
    the migration lock is held around anything that moves the database.
    """
    with plain.online() if plain is not None else nullcontext(True) as run:
        if run:
            _run_online()


def _run_online() -> None:
    engine = database.engine("flowdb-migrate")
    database.dialect.fence(engine)
    try:
        with engine.connect() as connection:
            _stop_between_transactions(connection)
            context.configure(
                connection=connection,
                **_fenced_options(
                    {
                        **_common_options(database.dialect.features.render_as_batch),
                        **_restartable_options(),
                    }
                ),
            )
            if database.dialect.features.ddl_commits:
                from flowdb.database.migrations import restartable

                restartable.install(context.get_context())
            with context.begin_transaction():
                if database.dialect.features.ddl_commits and config.attributes.get("direction") == (
                    "downgrade"
                ):
                    restartable.mark_downgrade(connection)
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    if plain is not None:
        from flowdb.database.interop import alembic_errors

        with alembic_errors():
            run_migrations_offline()
    else:
        run_migrations_offline()
else:
    run_migrations_online()
