"""``flowdb server``: serve the orchestration REST API with uvicorn.

Before uvicorn starts, the schema is checked (and, with ``FLOWDB_MIGRATE_ON_START``,
upgraded under the migration lock, with progress shown) in this process, so that a
database that cannot be served fails here in one line instead of in every worker.
Each worker then runs the same idempotent check, which costs one query at head.
"""

from __future__ import annotations

import typer

from flowdb.cli.output import escape, migration_report

server_app = typer.Typer(
    help="Serve the orchestration REST API.", no_args_is_help=True, rich_markup_mode=None
)


@server_app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(4200, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
) -> None:
    """Start the API server, making sure the database schema is at head first."""
    from flowdb.database.interface import ensure_schema
    from flowdb.database.target import Database
    from flowdb.errors import ConfigurationError

    try:
        import uvicorn

        import flowdb.server.app  # noqa: F401  (fail here, not in each worker)
    except ImportError as error:
        raise ConfigurationError(
            f"The server needs its extra packages ({error.name} is missing); "
            "install them with: pip install 'flowdb[server]'."
        ) from None

    database = Database.from_settings()
    target = escape(database.location())
    if database.settings.migrate_on_start:
        with migration_report(f"Checking the schema of {target}"):
            ensure_schema(database)
    else:
        ensure_schema(database, migrate=False)
    uvicorn.run(
        "flowdb.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_keep_alive=database.settings.server_keep_alive_timeout,
    )
