"""Parsing, validating and redacting database URLs.

flowdb accepts sync and async driver URLs for SQLite and PostgreSQL and maps each to
the driver a given job needs: migrations run on sync drivers (pysqlite, psycopg), the
API server on async ones (aiosqlite, asyncpg). Passwords never leave this module in
clear text: every message uses ``redact()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowdb.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_SQLITE_DRIVERS = {"", "pysqlite", "aiosqlite"}
_POSTGRES_DRIVERS = {"", "psycopg", "psycopg2", "asyncpg", "pg8000"}
#: ``scheme://user:password@`` inside a longer text (error messages).
_PASSWORD_IN_URL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)")
#: ``password=...`` as a URL query parameter or a libpq ``key=value`` setting.
_PASSWORD_PARAMETER = re.compile(r"(?P<key>\bpassword\s*=\s*)(?:'[^']*'|[^&\s]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``; works on malformed URLs too.

    The text is treated as one URL, however broken: whatever sits between the first
    ``:`` of its ``user:password`` part and its last ``@`` is hidden, and so is any
    ``password=`` parameter. When in doubt more is hidden, never less.
    """
    text = url
    at = text.rfind("@")
    if at >= 0:
        authority = text.find("//", 0, at)
        start = authority + 2 if authority >= 0 else 0
        colon = text.find(":", start, at)
        if colon >= 0:
            text = f"{text[: colon + 1]}***{text[at:]}"
    return _PASSWORD_PARAMETER.sub(r"\g<key>***", text)


def redact_message(message: str) -> str:
    """Hide passwords of any URLs or ``password=`` settings quoted inside ``message``."""
    text = _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", message)
    return _PASSWORD_PARAMETER.sub(r"\g<key>***", text)


@dataclass(frozen=True, repr=False)
class DatabaseUrl:
    """A validated database URL and what flowdb needs to know about it."""

    url: URL

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    @property
    def is_sqlite(self) -> bool:
        """Whether this is a SQLite database (file or memory)."""
        return self.dialect == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or ``None`` for memory databases and PostgreSQL."""
        if not self.is_sqlite:
            return None
        database = self.url.database
        if not database or database == ":memory:" or "mode=memory" in str(self.url):
            return None
        if database.startswith("file:"):
            database = database[len("file:") :].split("?", 1)[0]
        return Path(database).expanduser().resolve()

    @property
    def sync_url(self) -> URL:
        """The same database on the sync driver migrations run on."""
        driver = "sqlite+pysqlite" if self.is_sqlite else "postgresql+psycopg"
        return self.url.set(drivername=driver)

    @property
    def async_url(self) -> URL:
        """The same database on the async driver the API server runs on."""
        driver = "sqlite+aiosqlite" if self.is_sqlite else "postgresql+asyncpg"
        return self.url.set(drivername=driver)

    def redacted(self) -> str:
        """The URL as text, safe to print (password and any ``password=`` parameter hidden)."""
        return _PASSWORD_PARAMETER.sub(r"\g<key>***", self.url.render_as_string(hide_password=True))


def parse_database_url(raw: str) -> DatabaseUrl:
    """Validate ``raw`` and return it parsed; raise ``ConfigurationError`` when it is unusable."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = raw.strip()
    if text.startswith("postgres://"):  # the scheme Heroku and others hand out
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} is malformed; set FLOWDB_DATABASE_URL to a URL "
            "such as sqlite:////path/to/flowdb.db or postgresql+psycopg://user@host/dbname."
        ) from None
    backend, _, driver = url.drivername.partition("+")
    supported = (backend == "sqlite" and driver in _SQLITE_DRIVERS) or (
        backend == "postgresql" and driver in _POSTGRES_DRIVERS
    )
    if not supported:
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} uses {url.drivername!r}, which flowdb does not "
            "support; use sqlite:// (or sqlite+aiosqlite://) or postgresql:// "
            "(or postgresql+psycopg://, postgresql+asyncpg://)."
        )
    if "@" in (url.host or ""):
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} has an '@' in its password or user name; "
            "percent-encode it as %40 in FLOWDB_DATABASE_URL."
        )
    if backend == "postgresql" and not url.database:
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} names no database; add one after the host, "
            "e.g. postgresql+psycopg://user@host:5432/flowdb."
        )
    return DatabaseUrl(url)


def configured_database_url() -> DatabaseUrl:
    """The database URL from the settings, parsed and validated."""
    from flowdb.settings import get_settings

    return parse_database_url(get_settings().resolved_database_url())
