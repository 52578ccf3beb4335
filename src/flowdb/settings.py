"""Settings read from the environment (prefix ``FLOWDB_``).

Settings are read anew by ``get_settings()`` on each call so that tests and
long-lived processes see changes to the environment; reading them is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

DEFAULT_DATABASE_FILENAME = "flowdb.db"
DEFAULT_HOME = Path("~/.flowdb")
#: Characters left as they are in the path of the default SQLite URL; ``%``, ``?`` and
#: ``#`` (which SQLAlchemy would read as escapes, a query or a fragment) are encoded.
_PATH_SAFE = "/ :@!$&'()*+,;=~[]"
#: Settings whose value is a secret: an error about one never quotes it.
SECRET_SETTINGS = frozenset({"server_api_auth"})
#: The longest wait or run time a timeout setting takes, in seconds (about 24.8 days):
#: PostgreSQL's timeouts and SQLite's busy timeout are at most 2**31 - 1 milliseconds,
#: and a longer one failed at connect time as if the server were unreachable.
LONGEST_TIMEOUT = 2_147_483
#: The oldest a retention cutoff may be, in days (100 years): both the server's
#: (FLOWDB_RETENTION_DAYS) and ``flowdb database clean --older-than``'s.
LONGEST_RETENTION_DAYS = 36_500
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


class Secret:
    """A setting's secret text: shown as asterisks, read with ``get_secret_value()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The text itself (for the code that checks credentials, never for output)."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _empty_home_is_unset(value: object) -> object:
    """An empty ``FLOWDB_HOME`` means the default, as an unset one does.

    ``FLOWDB_HOME=`` (a template or CI variable left blank) would otherwise be the
    working directory, scattering a database and lock files wherever a command runs;
    the XDG base-directory variables are read the same way.
    """
    if isinstance(value, str) and not value.strip():
        return DEFAULT_HOME
    return value


def _api_auth_form(value: object) -> object:
    """Refuse a malformed credential setting at start, without quoting it (a secret)."""
    if value is None or value == "":
        return None
    if isinstance(value, Secret):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError(f"must be text: {API_AUTH_FORMS}")
    parse_api_auth(value)  # raises ValueError naming what is wrong, never the value
    return Secret(value)


def setting(
    default: object,
    description: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    before: Callable[[object], object] | None = None,
) -> Any:
    """One field of ``Settings``: its default, what it does, its bounds, a first step.

    ``before`` sees the raw value first (text from the environment, or a keyword
    argument) and returns what is converted to the field's type; the bounds are then
    checked (``ge``: at least, ``gt``: above, ``le``: at most).
    """
    bounds = {"ge": ge, "gt": gt, "le": le}
    metadata = {"description": description, "before": before, **bounds}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, init=False)
class Settings:
    """flowdb's configuration; every field maps to an ``FLOWDB_<NAME>`` variable.

    Read from the environment (the name without the prefix, in any case; the text
    converted to the field's type and checked against its bounds), with keyword
    arguments taking precedence. A plain frozen dataclass converted by
    ``flowdb.setting_values``: importing pydantic and building a model cost every
    command more than the rest of its start-up.
    """

    def __init__(self, **values: object) -> None:
        import os

        from flowdb.setting_values import convert

        names = {item.name for item in fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"Settings() got unknown settings: {', '.join(unknown)}")
        found = {
            name[len(ENV_PREFIX) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() in names
        }
        given = {**found, **values}
        hints = _type_hints(type(self))
        for item in fields(self):
            value = given.get(item.name, item.default)
            if item.name in given:
                value = convert(item, hints[item.name], given[item.name], SECRET_SETTINGS)
            object.__setattr__(self, item.name, value)
        # What the user said: the environment, and keywords other than a default
        # (``dataclasses.replace`` passes every field again as a keyword).
        said = set(found) | {n for n in values if values[n] != getattr(type(self), n, None)}
        object.__setattr__(self, "_given", frozenset(said))

    def is_given(self, name: str) -> bool:
        """Whether setting ``name`` came from the environment or a keyword (not its default).

        A dialect may use its own default where the user said nothing (SQLite's smaller
        data-migration batches).
        """
        given: frozenset[str] = getattr(self, "_given", frozenset())
        return name in given

    home: Path = setting(
        default=DEFAULT_HOME,
        before=_empty_home_is_unset,
        description="Folder for flowdb's own files, including the default SQLite database; "
        "empty means the default.",
    )
    database_url: str | None = setting(
        default=None,
        description="SQLAlchemy URL of the database; default: a SQLite file flowdb.db in home.",
    )
    migration_lock_timeout: float = setting(
        default=600.0,
        ge=0,
        le=LONGEST_TIMEOUT,
        description="Seconds a migration command waits for another one to finish.",
    )
    migration_statement_timeout: float = setting(
        default=0.0,
        ge=0,
        le=LONGEST_TIMEOUT,
        description="Seconds one migration statement may run on PostgreSQL; 0 means no limit. "
        "Set on flowdb's own migration connections, so a statement_timeout meant for the "
        "API (on the role or database) never cuts an index build short.",
    )
    migration_ddl_lock_timeout: float = setting(
        default=1.0,
        gt=0,
        le=LONGEST_TIMEOUT,
        description="Seconds one migration statement may wait for a table lock on PostgreSQL "
        "before its step rolls back and is retried; a waiting ACCESS EXCLUSIVE request "
        "would block every later query on the table, so waits stay short.",
    )
    migration_lock_retries: int = setting(
        default=6,
        ge=0,
        le=100,
        description="How often a step that timed out on a table lock is retried (back-off "
        "doubling from 0.5 s up to 10 s) before the upgrade fails closed.",
    )
    migration_batch_size: int = setting(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Rows per batch (and per transaction) in data migrations.",
    )
    server_query_timeout: float = setting(
        default=30.0,
        ge=0,
        le=LONGEST_TIMEOUT,
        description="Seconds one API query may run on PostgreSQL; 0 means no limit.",
    )
    server_keep_alive_timeout: int = setting(
        default=120,
        ge=1,
        le=86_400,
        description="Seconds the API server keeps an idle HTTP connection open; longer than "
        "the idle time of common client pools (httpx, requests, aiohttp), so a client never "
        "reuses a connection the server is closing.",
    )
    server_write_queue: bool = setting(
        default=True,
        description="On SQLite, whether each API server process runs its write "
        "transactions one at a time in arrival order (a fair queue) instead of letting "
        "them race in SQLite's busy handler; other dialects ignore it.",
    )
    database_pool_mode: Literal["auto", "session", "transaction"] = setting(
        default="auto",
        description="How PostgreSQL connections reach the server: 'auto' (detected: the "
        "server session of a client connection changes between transactions behind a "
        "transaction pooler), or forced: 'session' (directly, or through a pooler in "
        "session mode) or 'transaction' (through PgBouncer or another pooler in "
        "transaction mode: no session state, no prepared statements, the migration lock "
        "held in a transaction).",
    )
    migrate_on_start: bool = setting(
        default=True,
        description="Whether the API server upgrades the database to head when it starts.",
    )
    schema_wait_timeout: float = setting(
        default=60.0,
        ge=0,
        le=LONGEST_TIMEOUT,
        description="Seconds the API server waits for the schema to reach head when "
        "FLOWDB_MIGRATE_ON_START is false (a migration job upgrades it); 0 fails at once.",
    )
    server_heartbeat_interval: float = setting(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between an API server replica's heartbeats (flowdb_replica).",
    )
    server_heartbeat_stale: float = setting(
        default=30.0,
        gt=0,
        le=LONGEST_TIMEOUT,
        description="Seconds after its last heartbeat a replica counts as gone: an upgrade "
        "then no longer waits for it before a contract revision.",
    )
    server_admin_routes: bool = setting(
        default=False,
        description="Whether the destructive /api/admin/database routes are enabled.",
    )
    server_api_auth: Secret | None = setting(
        default=None,
        before=_api_auth_form,
        description="Credentials every API request must carry, except /api/health and "
        f"/api/ready: {API_AUTH_FORMS}; unset, the API is open.",
    )
    server_max_body_bytes: int = setting(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Largest request body the API server reads, in bytes; a larger one is "
        "refused with 413 before it is read into memory.",
    )
    server_metrics: bool = setting(
        default=True,
        description="Whether the API server answers /metrics (Prometheus' text format); "
        "with FLOWDB_SERVER_API_AUTH set it needs the credentials too.",
    )
    log_format: Literal["text", "json"] = setting(
        default="text",
        description="How the CLI and the API server write their logs on stderr: 'text' "
        "lines, or 'json': one JSON object per line (time, level, logger, message and "
        "the event's fields), with each request's id, route, status and latency.",
    )

    retention_batch_size: int = setting(
        default=500,
        ge=1,
        le=5_000,
        description="Flow runs per batch (and per short transaction) of 'flowdb database "
        "clean' and the retention service; each batch also deletes their task runs, "
        "states and logs.",
    )
    retention_days: float = setting(
        default=0,
        ge=0,
        le=LONGEST_RETENTION_DAYS,
        description="With a value above 0, the API server deletes finished flow runs "
        "older than this many days (with their task runs, states and logs) every "
        "FLOWDB_RETENTION_INTERVAL seconds; 0 (the default) keeps everything.",
    )
    retention_interval: float = setting(
        default=3600,
        ge=1,
        le=7 * 86_400,
        description="Seconds between two rounds of the server's retention service.",
    )

    backup_dir: Path | None = setting(
        default=None,
        description="Folder for the SQLite backups taken before a command changes the "
        "schema (and before a restore); default: backups in the home folder.",
    )
    backup_keep: int = setting(
        default=5,
        ge=0,
        le=10_000,
        description="How many backups of each SQLite database to keep (older flowdb backups "
        "of it are deleted); 0 turns backups off.",
    )

    def api_credentials(self) -> ApiCredentials | None:
        """The credentials the API requires, or None when it is open."""
        if self.server_api_auth is None:
            return None
        return parse_api_auth(self.server_api_auth.get_secret_value())

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


_HINTS: dict[str, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """The field types of ``cls``, resolved once (the annotations are strings)."""
    import typing

    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _HINTS:
        _HINTS[key] = typing.get_type_hints(cls)
    return _HINTS[key]


def get_settings() -> Settings:
    """Read the settings from the environment now.

    A malformed variable becomes a ``ConfigurationError`` naming the variable (and its
    value, unless it is a secret) in one line.
    """
    return Settings()
