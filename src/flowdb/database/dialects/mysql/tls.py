"""PyMySQL's "preferred" TLS with one context per process instead of one per connection.

Given no TLS option, PyMySQL tries TLS when the server offers it, unverified, and falls
back to plain TCP when it does not. For that it builds a fresh default context in every
connection's constructor, loading the system's CA certificates: about 20 ms of CPU per
connection, though an unverified context never reads them (a plain connection to a
local MariaDB takes under 1 ms). flowdb's sync engines are unpooled, and a command, a
heartbeat or a lock session each connects: on MariaDB that load was most of the cost of
a short command.

``connect`` makes the same connection with the same context, built once per process.
Connections given TLS options (``ssl_ca``, ``ssl_verify_cert``, ... in the URL) build
theirs as PyMySQL always does. This is the one place flowdb reaches a private PyMySQL
method (``Connection._create_ssl_ctx``); the TLS tests of
``tests/database/test_mariadb.py`` fail if PyMySQL stops calling it that way.
"""

from __future__ import annotations

import threading
from typing import Any

import pymysql  # type: ignore[import-untyped]

_lock = threading.Lock()
_preferred: Any = None


class _SharedContextConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection whose preferred-mode TLS context is the process's one."""

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        if sslp:  # explicit TLS options: PyMySQL's own context, as always
            return super()._create_ssl_ctx(sslp)
        global _preferred
        with _lock:
            if _preferred is None:
                _preferred = super()._create_ssl_ctx(sslp)
            return _preferred


def connect(*args: Any, **kwargs: Any) -> Any:
    """``pymysql.connect(*args, **kwargs)``, sharing the preferred-mode TLS context."""
    return _SharedContextConnection(*args, **kwargs)
