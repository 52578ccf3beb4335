"""``flowdb server``: serve the orchestration REST API with uvicorn.

Before uvicorn starts, the schema is checked (and, with ``FLOWDB_MIGRATE_ON_START``,
upgraded under the migration lock, with progress shown) in this process, so that a
database that cannot be served fails here in one line instead of in every worker.
Each worker then runs the same idempotent check, which costs one query at head.
With ``--workers N`` the workers are forked from this process (``flowdb.server.forking``),
which has imported the app already, instead of each importing it again.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from typing import Any

import typer

from flowdb.cli.output import escape, interrupted_leaves, migration_report, stderr_console

server_app = typer.Typer(
    help="Serve the orchestration REST API.", no_args_is_help=True, rich_markup_mode=None
)


class LogLevel(StrEnum):
    """uvicorn's log levels, so that a typo is a usage error instead of a crash."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


@server_app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(4200, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
    log_level: LogLevel = typer.Option(LogLevel.info, help="uvicorn's log level."),
) -> None:
    """Start the API server on FLOWDB_DATABASE_URL, making sure its schema is at head first."""
    from flowdb.database.interface import ensure_schema
    from flowdb.database.target import Database
    from flowdb.errors import ConfigurationError

    check_address(host, port)

    try:
        import uvicorn

        import flowdb.server.app  # noqa: F401  (fail here, not in each worker)
    except ImportError as error:
        raise ConfigurationError(
            f"The server needs its extra packages ({error.name} is missing); "
            "install them with: pip install 'flowdb[server]'."
        ) from None

    database = Database.from_settings()
    if database.settings.server_api_auth is None and not loopback_only(host):
        stderr_console().print(escape(open_api_warning(host, port)), style="yellow")
    target = escape(database.location())
    if database.settings.migrate_on_start:
        with migration_report(f"Checking the schema of {target}"):
            ensure_schema(database)
    else:
        from flowdb.database.waiting import first_look

        # Only what waiting cannot fix fails here: behind head, the workers listen at
        # once and wait for the migration job (flowdb.server.schema_wait).
        first_look(database)
    from flowdb.redaction import redact

    # Which database this server serves, never with its password (logs are shared).
    served = redact(database.url.text)
    stderr_console().print(
        escape(
            f"Serving {served} at revision {database.history.head}"
            if database.settings.migrate_on_start
            else f"Serving {served} once its schema is at {database.history.head}"
        )
    )
    interrupted_leaves("the API server stopped")
    log_options: dict[str, Any] = {}
    if database.settings.log_format == "json":
        from flowdb.logs import uvicorn_log_config

        # JSON lines; the app's own access records replace uvicorn's (request id, latency).
        log_options = {"log_config": uvicorn_log_config(log_level.value), "access_log": False}
    if workers > 1:
        from flowdb.server.forking import fork_workers

        fork_workers()
    uvicorn.run(
        "flowdb.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.value,
        timeout_keep_alive=database.settings.server_keep_alive_timeout,
        **log_options,
    )


def check_address(host: str, port: int) -> None:
    """Fail in one line, before the database is touched, when uvicorn could not listen.

    Binds (and closes) a socket the way uvicorn will, so a port in use or an address
    that is not this host's is reported before a migration runs, not after.
    """
    from flowdb.errors import AddressUnavailableError

    fix = "choose another --host/--port, or stop the program that listens there"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise AddressUnavailableError(
            f"Cannot listen on {host}:{port}: {host!r} is not a known address ({error}); {fix}."
        ) from None
    family, kind, protocol, _name, address = infos[0]
    try:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise AddressUnavailableError(
            f"Cannot listen on {host}:{port} ({error.strerror or error}); {fix}."
        ) from None


def loopback_only(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def open_api_warning(host: str, port: int) -> str:
    """The start-up line for an API reachable from other machines without credentials."""
    return (
        f"Warning: the API listens on {host}:{port}, beyond this machine, and "
        "FLOWDB_SERVER_API_AUTH is not set: anyone who reaches the port can read and "
        "change every flow and run. Set it, or listen on 127.0.0.1."
    )
