"""Parsing and validating database URLs, and showing them without their passwords.

A ``DatabaseUrl`` knows which backend and driver a URL names and nothing more: what a
backend means (its files, drivers, connection parameters) lives in its dialect module
(``flowdb.database.dialects``). Passwords never leave this module in clear text:
every message uses ``redact()`` or ``DatabaseUrl.redacted()``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowdb.errors import ConfigurationError
from flowdb.redaction import PASSWORD_PARAMETER, redact, redact_message

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["DatabaseUrl", "redact", "redact_message"]


#: A URL with nothing SQLAlchemy would decode or re-render: a scheme and a plain path
#: (no user, host, query, percent escapes or colons), e.g. ``sqlite:////var/lib/x.db``.
#: Such URLs are read without importing SQLAlchemy, which is most of a fresh install's
#: start-up; ``tests/database/test_urls.py`` checks they read as SQLAlchemy reads them.
PLAIN = re.compile(r"^(?P<scheme>[A-Za-z0-9_]+(?:\+[A-Za-z0-9_]+)?):///(?P<path>[^?#%:@]+)$")


@dataclass(frozen=True, repr=False)
class DatabaseUrl:
    """A validated database URL: its backend (``sqlite``, ``postgresql``) and driver.

    ``text`` is the URL as configured; ``url``, SQLAlchemy's parse of it, is made when
    first used (at once for URLs that are not plain).
    """

    text: str

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"

    @functools.cached_property
    def url(self) -> URL:
        """SQLAlchemy's ``URL`` of this URL."""
        from sqlalchemy.engine import make_url

        return make_url(self.text)

    @property
    def _plain(self) -> re.Match[str] | None:
        return PLAIN.match(self.text)

    @property
    def backend(self) -> str:
        """The database kind the URL names, e.g. ``"sqlite"`` or ``"postgresql"``."""
        return self.text.split("://", 1)[0].partition("+")[0]

    @property
    def driver(self) -> str:
        """The driver the URL names after ``+`` (``""`` when it names none)."""
        return self.text.split("://", 1)[0].partition("+")[2]

    @property
    def database(self) -> str | None:
        """The database part: a file path for SQLite, a database name for servers."""
        plain = self._plain
        if plain is not None:
            return plain["path"]
        return self.url.database

    def redacted(self) -> str:
        """The URL as text, safe to print (password and any ``password=`` parameter hidden)."""
        shown = self.text if self._plain else self.url.render_as_string(hide_password=True)
        return PASSWORD_PARAMETER.sub(r"\g<key>***", shown)


def bad_port(raw: str, port: str) -> ConfigurationError:
    """The error for a port that is not a number from 1 to 65535 (checked before connecting).

    SQLAlchemy reads any number as a port; the driver would then fail in ways that look
    like a broken migration (PostgreSQL) or an unreachable server (MariaDB).
    """
    return ConfigurationError(
        f"Database URL {redact(raw)!r} has the port {port!r}, which is not a port number "
        "(1 to 65535); fix the port in FLOWDB_DATABASE_URL."
    )


def nul_part(url: DatabaseUrl) -> str | None:
    """The part of ``url`` that holds a NUL character once decoded (``%00``), if any.

    libpq ends each part at a NUL and would connect to the database (or as the user)
    named by what comes before it, another one than the URL names; Python's ``sqlite3``
    raises on the path and MariaDB refuses the handshake, both with errors that do not
    say why.
    """
    if "\x00" not in url.text and "%00" not in url.text:
        return None  # the usual case, answered without parsing
    database_part = "the database (name or file path)"
    if url._plain is not None:
        return database_part  # a plain URL has no escapes: the character itself is in the path
    parsed = url.url
    parts = {
        "the user name": parsed.username,
        "the password": parsed.password,
        "the host": parsed.host,
        database_part: parsed.database,
    }
    for name, text in parts.items():
        if text and "\x00" in text:
            return name
    for key, value in parsed.query.items():
        values = value if isinstance(value, tuple) else (value,)
        if "\x00" in key or any("\x00" in item for item in values):
            return f"the parameter {key.replace(chr(0), '%00')!r}"
    return None


def nul_character(raw: str, part: str) -> ConfigurationError:
    """The error for a URL with a NUL character in ``part`` (``nul_part``)."""
    return ConfigurationError(
        f"Database URL {redact(raw)!r} has a NUL character (%00) in {part}; drivers "
        "cut text short or refuse it at a NUL, so remove it from FLOWDB_DATABASE_URL."
    )


def unencoded_at(raw: str) -> ConfigurationError:
    """The error for a URL whose user or password holds a bare ``@``.

    Parsed as it stands, the part after the first ``@`` would become the host name:
    part of the password would be printed in messages and sent to DNS.
    """
    return ConfigurationError(
        f"Database URL {redact(raw)!r} has an '@' in its password or user name; "
        "percent-encode it as %40 in FLOWDB_DATABASE_URL."
    )
