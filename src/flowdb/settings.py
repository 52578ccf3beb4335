"""Settings read from the environment (prefix ``FLOWDB_``).

Settings are read anew by ``get_settings()`` on each call so that tests and
long-lived processes see changes to the environment; reading them is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_DATABASE_FILENAME = "flowdb.db"
DEFAULT_HOME = Path("~/.flowdb")
#: Characters left as they are in the path of the default SQLite URL; ``%``, ``?`` and
#: ``#`` (which SQLAlchemy would read as escapes, a query or a fragment) are encoded.
_PATH_SAFE = "/ :@!$&'()*+,;=~[]"
#: Settings whose value is a secret: an error about one never quotes it.
SECRET_SETTINGS = frozenset({"server_api_auth"})
#: The forms FLOWDB_SERVER_API_AUTH takes (shown when it is malformed; no value quoted).
API_AUTH_FORMS = "'basic:<user>:<password>' or 'bearer:<token>'"


@dataclass(frozen=True)
class ApiCredentials:
    """What ``FLOWDB_SERVER_API_AUTH`` asks of every request: HTTP Basic or a bearer token."""

    scheme: Literal["basic", "bearer"]
    #: For Basic, ``user:password`` (what the header encodes); for Bearer, the token.
    secret: str

    def __repr__(self) -> str:
        return f"ApiCredentials(scheme={self.scheme!r}, secret='**********')"


def parse_api_auth(text: str) -> ApiCredentials:
    """Read ``basic:<user>:<password>`` or ``bearer:<token>``.

    A ``ValueError`` says what is wrong without quoting the text, which is a secret.
    The user may not hold a colon (HTTP Basic could not tell where it ends); the token
    is one word of visible ASCII, as RFC 6750 allows in a header.
    """
    scheme, _, rest = text.partition(":")
    if scheme.lower() == "basic":
        user, colon, password = rest.partition(":")
        if not user or not colon or not password:
            raise ValueError(f"a user and a password are needed: {API_AUTH_FORMS}")
        return ApiCredentials("basic", f"{user}:{password}")
    if scheme.lower() == "bearer":
        if not rest or not all("!" <= char <= "~" for char in rest):
            raise ValueError(f"the token must be visible ASCII without spaces: {API_AUTH_FORMS}")
        return ApiCredentials("bearer", rest)
    raise ValueError(f"must start with 'basic:' or 'bearer:': {API_AUTH_FORMS}")


ENV_PREFIX = "FLOWDB_"


class Settings(BaseModel):
    """flowdb's configuration; every field maps to an ``FLOWDB_<NAME>`` variable.

    Read from the environment as pydantic-settings reads scalar fields (the name
    without the prefix, in any case; the text validated as the field's type), with
    keyword arguments taking precedence. A plain model: pydantic-settings (and the
    asyncio it imports) cost every command a noticeable part of its start-up.
    """

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **values: object) -> None:
        import os

        fields = type(self).model_fields
        found = {
            name[len(ENV_PREFIX) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() in fields
        }
        super().__init__(**{**found, **values})

    home: Path = Field(
        default=DEFAULT_HOME,
        description="Folder for flowdb's own files, including the default SQLite database; "
        "empty means the default.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database; default: a SQLite file flowdb.db in home.",
    )
    migration_lock_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a migration command waits for another one to finish.",
    )
    migration_statement_timeout: float = Field(
        default=0.0,
        ge=0,
        description="Seconds one migration statement may run on PostgreSQL; 0 means no limit. "
        "Set on flowdb's own migration connections, so a statement_timeout meant for the "
        "API (on the role or database) never cuts an index build short.",
    )
    migration_ddl_lock_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds one migration statement may wait for a table lock on PostgreSQL "
        "before its step rolls back and is retried; a waiting ACCESS EXCLUSIVE request "
        "would block every later query on the table, so waits stay short.",
    )
    migration_lock_retries: int = Field(
        default=6,
        ge=0,
        le=100,
        description="How often a step that timed out on a table lock is retried (back-off "
        "doubling from 0.5 s up to 10 s) before the upgrade fails closed.",
    )
    migration_batch_size: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Rows per batch (and per transaction) in data migrations.",
    )
    server_query_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds one API query may run on PostgreSQL; 0 means no limit.",
    )
    server_keep_alive_timeout: int = Field(
        default=120,
        ge=1,
        le=86_400,
        description="Seconds the API server keeps an idle HTTP connection open; longer than "
        "the idle time of common client pools (httpx, requests, aiohttp), so a client never "
        "reuses a connection the server is closing.",
    )
    database_pool_mode: Literal["auto", "session", "transaction"] = Field(
        default="auto",
        description="How PostgreSQL connections reach the server: 'auto' (detected: the "
        "server session of a client connection changes between transactions behind a "
        "transaction pooler), or forced: 'session' (directly, or through a pooler in "
        "session mode) or 'transaction' (through PgBouncer or another pooler in "
        "transaction mode: no session state, no prepared statements, the migration lock "
        "held in a transaction).",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Whether the API server upgrades the database to head when it starts.",
    )
    schema_wait_timeout: float = Field(
        default=60.0,
        ge=0,
        description="Seconds the API server waits for the schema to reach head when "
        "FLOWDB_MIGRATE_ON_START is false (a migration job upgrades it); 0 fails at once.",
    )
    server_heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between an API server replica's heartbeats (flowdb_replica).",
    )
    server_heartbeat_stale: float = Field(
        default=30.0,
        gt=0,
        description="Seconds after its last heartbeat a replica counts as gone: an upgrade "
        "then no longer waits for it before a contract revision.",
    )
    server_admin_routes: bool = Field(
        default=False,
        description="Whether the destructive /api/admin/database routes are enabled.",
    )
    server_api_auth: SecretStr | None = Field(
        default=None,
        description="Credentials every API request must carry, except /api/health and "
        f"/api/ready: {API_AUTH_FORMS}; unset, the API is open.",
    )
    server_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Largest request body the API server reads, in bytes; a larger one is "
        "refused with 413 before it is read into memory.",
    )
    server_metrics: bool = Field(
        default=True,
        description="Whether the API server answers /metrics (Prometheus' text format); "
        "with FLOWDB_SERVER_API_AUTH set it needs the credentials too.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How the CLI and the API server write their logs on stderr: 'text' "
        "lines, or 'json': one JSON object per line (time, level, logger, message and "
        "the event's fields), with each request's id, route, status and latency.",
    )

    retention_batch_size: int = Field(
        default=500,
        ge=1,
        le=5_000,
        description="Flow runs per batch (and per short transaction) of 'flowdb database "
        "clean' and the retention service; each batch also deletes their task runs, "
        "states and logs.",
    )
    retention_days: float = Field(
        default=0,
        ge=0,
        le=36_500,
        description="With a value above 0, the API server deletes finished flow runs "
        "older than this many days (with their task runs, states and logs) every "
        "FLOWDB_RETENTION_INTERVAL seconds; 0 (the default) keeps everything.",
    )
    retention_interval: float = Field(
        default=3600,
        ge=1,
        le=7 * 86_400,
        description="Seconds between two rounds of the server's retention service.",
    )

    backup_dir: Path | None = Field(
        default=None,
        description="Folder for the SQLite backups taken before a command changes the "
        "schema (and before a restore); default: backups in the home folder.",
    )
    backup_keep: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description="How many backups of each SQLite database to keep (older flowdb backups "
        "of it are deleted); 0 turns backups off.",
    )

    @field_validator("server_api_auth", mode="before")
    @classmethod
    def _api_auth_form(cls, value: object) -> object:
        """Refuse a malformed credential setting at start, without quoting it (a secret)."""
        if value is None or value == "":
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            raise ValueError(f"must be text: {API_AUTH_FORMS}")
        parse_api_auth(text)  # raises ValueError naming what is wrong, never the value
        return text

    def api_credentials(self) -> ApiCredentials | None:
        """The credentials the API requires, or None when it is open."""
        if self.server_api_auth is None:
            return None
        return parse_api_auth(self.server_api_auth.get_secret_value())

    @field_validator("home", mode="before")
    @classmethod
    def _empty_home_is_unset(cls, value: object) -> object:
        """An empty ``FLOWDB_HOME`` means the default, as an unset one does.

        ``FLOWDB_HOME=`` (a template or CI variable left blank) would otherwise be the
        working directory, scattering a database and lock files wherever a command runs;
        the XDG base-directory variables are read the same way.
        """
        if isinstance(value, str) and not value.strip():
            return DEFAULT_HOME
        return value

    @property
    def resolved_home(self) -> Path:
        """The home folder as an absolute path, with ``~`` expanded and symlinks resolved.

        Absolute and resolved like ``DatabaseUrl.sqlite_path``, so that the folder of the
        default database compares equal to it whatever form ``FLOWDB_HOME`` was given in.
        """
        return self.home.expanduser().resolve()

    def resolved_database_url(self) -> str:
        """The configured URL, or the default SQLite file in the home folder.

        Characters that mean something in a URL (``%``, ``?``, ``#``) are percent-encoded
        in the default file's path, so a home folder named with them still works.
        """
        if self.database_url:
            return self.database_url
        path = str(self.resolved_home / DEFAULT_DATABASE_FILENAME)
        return f"sqlite:///{quote(path, safe=_PATH_SAFE)}"


def get_settings() -> Settings:
    """Read the settings from the environment now.

    A malformed variable becomes a ``ConfigurationError`` naming the variable,
    instead of pydantic's multi-line report.
    """
    from pydantic import ValidationError

    from flowdb.errors import ConfigurationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLOWDB_" + "_".join(str(part) for part in first["loc"]).upper()
        value = first.get("input")
        secret = str(first["loc"][0]) in SECRET_SETTINGS if first["loc"] else False
        shown = f"={value!r}" if isinstance(value, str) and len(value) <= 80 and not secret else ""
        raise ConfigurationError(
            f"{name}{shown} is invalid ({first['msg']}); fix or unset that environment variable."
        ) from None
