"""Parsing and validating database URLs, and showing them without their passwords.

A ``DatabaseUrl`` knows which backend and driver a URL names and nothing more: what a
backend means (its files, drivers, connection parameters) lives in its dialect module
(``flowdb.database.dialects``). Passwords never leave this module in clear text:
every message uses ``redact()`` or ``DatabaseUrl.redacted()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowdb.errors import ConfigurationError
from flowdb.redaction import PASSWORD_PARAMETER, redact, redact_message

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["DatabaseUrl", "parse_database_url", "redact", "redact_message"]


@dataclass(frozen=True, repr=False)
class DatabaseUrl:
    """A validated database URL: its backend (``sqlite``, ``postgresql``) and driver."""

    url: URL

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"

    @property
    def backend(self) -> str:
        """The database kind the URL names, e.g. ``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    @property
    def driver(self) -> str:
        """The driver the URL names after ``+`` (``""`` when it names none)."""
        return self.url.drivername.partition("+")[2]

    def redacted(self) -> str:
        """The URL as text, safe to print (password and any ``password=`` parameter hidden)."""
        return PASSWORD_PARAMETER.sub(r"\g<key>***", self.url.render_as_string(hide_password=True))


def parse_database_url(raw: str) -> DatabaseUrl:
    """Validate ``raw`` and return it parsed; raise ``ConfigurationError`` when it is unusable."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from flowdb.database.dialects import dialect_class, supported_schemes

    if not isinstance(raw, str):
        raise ConfigurationError(f"The database URL must be text, not {raw!r}.")
    text = raw.strip()
    if text.startswith("postgres://"):  # the scheme Heroku and others hand out
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        if text.count("@") > 1:
            raise unencoded_at(raw) from None
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} is malformed; set FLOWDB_DATABASE_URL to a URL "
            "such as sqlite:////path/to/flowdb.db or postgresql+psycopg://user@host/dbname."
        ) from None
    backend, _, driver = url.drivername.partition("+")
    dialect = dialect_class(backend)
    if dialect is None or driver not in dialect.drivers:
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} uses {url.drivername!r}, which flowdb does not "
            f"support; use one of {supported_schemes()}."
        )
    parsed = DatabaseUrl(url)
    dialect.validate_url(parsed, redact(raw))
    return parsed


def unencoded_at(raw: str) -> ConfigurationError:
    """The error for a URL whose user or password holds a bare ``@``.

    Parsed as it stands, the part after the first ``@`` would become the host name:
    part of the password would be printed in messages and sent to DNS.
    """
    return ConfigurationError(
        f"Database URL {redact(raw)!r} has an '@' in its password or user name; "
        "percent-encode it as %40 in FLOWDB_DATABASE_URL."
    )
