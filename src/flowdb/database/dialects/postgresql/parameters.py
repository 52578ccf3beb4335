"""PostgreSQL's URL parameters for each driver: libpq's for psycopg, asyncpg's for asyncpg.

One URL serves both drivers: libpq's parameters (``sslmode``, ``connect_timeout``,
``application_name``, ``options``) are translated for asyncpg, asyncpg's (``ssl``,
``timeout``) for psycopg.
"""

from __future__ import annotations

import math
from typing import Any

from flowdb.database.urls import DatabaseUrl
from flowdb.errors import ConfigurationError

_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
#: URL parameters asyncpg understands as they are.
_ASYNCPG_NATIVE = {"ssl", "timeout", "command_timeout", "statement_cache_size"}
#: URL parameters only one driver knows, and what the other driver calls them.
_LIBPQ_FOR_ASYNCPG_PARAMETER = {"ssl": "sslmode", "timeout": "connect_timeout"}
#: libpq's connection parameters and asyncpg's names for them.
_LIBPQ_CONNECTION = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
}
_DROPPED_FOR_PSYCOPG = {"command_timeout", "statement_cache_size", "prepared_statement_cache_size"}


def _seconds(key: str, text: str, shown: str) -> float:
    """A timeout parameter's seconds: a finite number, 0 or more (0: no limit).

    libpq read ``nan`` as a failed statement, asyncpg read 0 and below as "give up at
    once": the same URL connected for migrations and not for the API server.
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(
            f"Database URL {shown!r} has {key}={text!r}; give a number of seconds, 0 or "
            "more (0: no limit)."
        )
    return seconds


def _quoted(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _options_text(settings: dict[str, str]) -> str:
    """libpq's ``options`` for ``settings``: ``-c name=value`` each, spaces escaped."""
    backslash = "\\"

    def escaped(value: str) -> str:
        return value.replace(backslash, backslash * 2).replace(" ", backslash + " ")

    return " ".join(f"-c {name}={escaped(value)}" for name, value in settings.items())


def _psycopg_query(url: DatabaseUrl, shown: str) -> dict[str, Any]:
    """The URL's parameters in libpq's terms, for psycopg."""
    query: dict[str, Any] = {}
    for key, value in url.url.query.items():
        if key in _DROPPED_FOR_PSYCOPG:
            continue
        if key == "ssl":
            query["sslmode"] = _ssl_mode(value, shown)
        elif key in _LIBPQ_FOR_ASYNCPG_PARAMETER:
            query[_LIBPQ_FOR_ASYNCPG_PARAMETER[key]] = value
        else:
            query[key] = value
    return query


def _ssl_mode(value: Any, shown: str) -> str:
    text = str(value).lower()
    mode = {"true": "require", "false": "disable", "1": "require", "0": "disable"}.get(text, text)
    if mode not in _SSL_MODES:
        raise ConfigurationError(
            f"Database URL {shown!r} has ssl/sslmode={value!r}; use one of "
            f"{', '.join(sorted(_SSL_MODES))}."
        )
    return mode


def _asyncpg_connect_args(url: DatabaseUrl, shown: str, build_ssl: bool = True) -> dict[str, Any]:
    """The URL's parameters as asyncpg ``connect()`` arguments (libpq names translated).

    ``build_ssl=False`` only validates: certificate files are read when the server
    connects, not when a CLI command parses the URL.
    """
    query: dict[str, Any] = dict(url.url.query)
    args: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    ssl_files: dict[str, Any] = {
        key: query.pop(key) for key in ("sslrootcert", "sslcert", "sslkey") if key in query
    }
    mode = query.pop("sslmode", None) or query.pop("ssl", None)
    if mode is not None or ssl_files:
        checked = _ssl_mode(mode or "prefer", shown)
        args["ssl"] = _ssl_context(checked, ssl_files) if build_ssl else checked
    for key, value in query.items():
        text = str(value)
        if key in ("connect_timeout", "timeout", "command_timeout"):
            seconds = _seconds(key, text, shown)
            if key == "command_timeout":
                if seconds > 0:  # 0: no limit, which is asyncpg's default (it refuses 0)
                    args["command_timeout"] = seconds
            else:  # libpq waits without a limit for 0; asyncpg gave up at once
                args["timeout"] = seconds if seconds > 0 else math.inf
        elif key in ("statement_cache_size", "prepared_statement_cache_size"):
            args["statement_cache_size"] = int(text) if text.isdigit() else 0
        elif key == "application_name":
            server_settings["application_name"] = text
        elif key == "options":
            server_settings.update(_options_settings(text, shown))
        elif key == "target_session_attrs":
            args["target_session_attrs"] = text
        elif key in _LIBPQ_CONNECTION:
            args[_LIBPQ_CONNECTION[key]] = int(text) if key == "port" and text.isdigit() else text
        elif key in _ASYNCPG_NATIVE:
            args[key] = value
        else:
            raise ConfigurationError(
                f"Database URL {shown!r} has the parameter {key!r}, which the API server's "
                "PostgreSQL driver cannot use; remove it from FLOWDB_DATABASE_URL (supported: "
                "host, port, user, password, dbname, sslmode, sslrootcert, sslcert, sslkey, "
                "connect_timeout, application_name, options, target_session_attrs)."
            )
    if server_settings:
        args["server_settings"] = server_settings
    return args


def _ssl_context(mode: str, files: dict[str, Any]) -> Any:
    """asyncpg's ``ssl`` argument: the mode name, or a context when certificates are given."""
    if not files:
        return mode
    import ssl

    if mode in ("disable", "allow", "prefer", "require") and "sslrootcert" not in files:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=files.get("sslrootcert"))
        context.check_hostname = mode == "verify-full"
    if "sslcert" in files:
        context.load_cert_chain(files["sslcert"], files.get("sslkey"))
    return context


def _options_settings(options: str, shown: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value ...``) as server settings."""
    words = options.split()
    settings: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            pair, index = words[index + 1], index + 2
        elif word.startswith("-c") or word.startswith("--"):
            pair, index = word[2:], index + 1
        else:
            raise ConfigurationError(
                f"Database URL {shown!r} has options={options!r}; only '-c name=value' "
                "settings are supported there."
            )
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigurationError(
                f"Database URL {shown!r} has options={options!r}; write each as -c name=value."
            )
        settings[name.replace("-", "_")] = value
    return settings
