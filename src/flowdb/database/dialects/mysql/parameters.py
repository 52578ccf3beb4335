"""MariaDB's URL parameters, checked before anything connects.

SQLAlchemy hands a MariaDB URL's parameters to PyMySQL as keyword arguments: an unknown
one, a timeout that is not a whole number of seconds, or a TLS file that is not there
ended in a traceback (or in a message about the database's own path) instead of one line.
"""

from __future__ import annotations

from pathlib import Path

from flowdb.database.urls import DatabaseUrl
from flowdb.errors import ConfigurationError

#: What PyMySQL's ``Connection`` takes as text in a URL (``tests/database/test_urls.py``
#: compares it with PyMySQL's signature), and the TLS options SQLAlchemy gathers into
#: its ``ssl`` argument.
KNOWN = frozenset(
    {
        "auth_plugin_map",
        "autocommit",
        "binary_prefix",
        "bind_address",
        "charset",
        "client_flag",
        "collation",
        "compress",
        "connect_timeout",
        "defer_connect",
        "init_command",
        "local_infile",
        "max_allowed_packet",
        "named_pipe",
        "program_name",
        "read_default_file",
        "read_default_group",
        "read_timeout",
        "server_public_key",
        "sql_mode",
        "ssl_ca",
        "ssl_cert",
        "ssl_disabled",
        "ssl_key",
        "ssl_key_password",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "unix_socket",
        "use_unicode",
        "write_timeout",
        # gathered by SQLAlchemy into PyMySQL's ``ssl`` argument
        "ssl_capath",
        "ssl_check_hostname",
        "ssl_cipher",
    }
)
#: Whole seconds PyMySQL takes for each timeout (it refuses 0; a year at most to connect).
TIMEOUTS = {"connect_timeout": 31_536_000, "read_timeout": None, "write_timeout": None}
#: TLS parameters that name a file (or, ``ssl_capath``, a folder) on this machine.
TLS_PATHS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_capath")


def check_parameters(url: DatabaseUrl, shown: str) -> None:
    """Refuse a parameter PyMySQL does not take, a bad timeout or a missing TLS file."""
    for key, value in url.url.query.items():
        text = value if isinstance(value, str) else ",".join(value)
        if key not in KNOWN:
            raise ConfigurationError(
                f"Database URL {shown!r} has the parameter {key!r}, which MariaDB's driver "
                "(PyMySQL) does not take; remove it from FLOWDB_DATABASE_URL."
            )
        if key in TIMEOUTS:
            _check_timeout(key, text, TIMEOUTS[key], shown)
        if key in TLS_PATHS and not Path(text).exists():
            raise ConfigurationError(
                f"Database URL {shown!r} has {key}={text!r}, and there is no such "
                "file; fix the path in FLOWDB_DATABASE_URL."
            )


def _check_timeout(key: str, text: str, longest: int | None, shown: str) -> None:
    """A whole number of seconds from 1 (to ``longest``), as PyMySQL requires."""
    stripped = text.strip()
    seconds = int(stripped) if stripped.isdigit() else 0
    if seconds < 1 or (longest is not None and seconds > longest):
        allowed = f"from 1 to {longest}" if longest is not None else "1 or more"
        raise ConfigurationError(
            f"Database URL {shown!r} has {key}={text!r}; give a whole number of seconds, {allowed}."
        )
