"""One module per database dialect, holding everything that differs between them.

Outside this package no code asks which dialect it runs on: it asks the ``Dialect``
object of its ``Database`` (``flowdb.database.target``) to do the dialect's part. A
new dialect is one module beside these, with a class implementing ``base.Dialect``,
registered in ``_REGISTRY`` below.

Importing this package is cheap: the dialect modules import SQLAlchemy and drivers
inside the methods that need them.
"""

from __future__ import annotations

import importlib
import re

from flowdb.database.dialects.base import Dialect
from flowdb.database.urls import (
    PLAIN,
    DatabaseUrl,
    bad_port,
    nul_character,
    nul_part,
    unencoded_at,
)
from flowdb.errors import ConfigurationError
from flowdb.redaction import redact

#: backend name (a URL's scheme before ``+``) -> "module:class"
_REGISTRY = {
    "sqlite": "flowdb.database.dialects.sqlite:SqliteDialect",
    "postgresql": "flowdb.database.dialects.postgresql:PostgresDialect",
    "mysql": "flowdb.database.dialects.mysql:MysqlDialect",
    "mariadb": "flowdb.database.dialects.mysql:MariadbDialect",
}


def dialect_class(backend: str) -> type[Dialect] | None:
    """The dialect class for a backend name such as ``"sqlite"``; ``None`` if unsupported."""
    location = _REGISTRY.get(backend)
    if location is None:
        return None
    module_name, _, class_name = location.partition(":")
    found: type[Dialect] = getattr(importlib.import_module(module_name), class_name)
    return found


def supported_schemes() -> str:
    """The URL schemes flowdb accepts, for messages: ``sqlite://, sqlite+aiosqlite://, ...``."""
    schemes = []
    for backend in _REGISTRY:
        dialect = dialect_class(backend)
        assert dialect is not None
        schemes += [f"{backend}+{d}://" if d else f"{backend}://" for d in sorted(dialect.drivers)]
    return ", ".join(schemes)


def backends() -> list[str]:
    """Every backend name flowdb supports (``sqlite``, ``postgresql``, ...)."""
    return list(_REGISTRY)


def parse_database_url(raw: str) -> DatabaseUrl:
    """Validate ``raw`` and return it parsed; raise ``ConfigurationError`` when it is unusable.

    A plain URL (``urls.PLAIN``) is validated without SQLAlchemy; any other is parsed by
    it. Here, beside the registry, since the URL's scheme chooses the dialect that
    validates the rest.
    """
    if not isinstance(raw, str):
        raise ConfigurationError(f"The database URL must be text, not {raw!r}.")
    text = raw.strip()
    if text.startswith("postgres://"):  # the scheme Heroku and others hand out
        text = "postgresql://" + text[len("postgres://") :]
    parsed = DatabaseUrl(text)
    if PLAIN.match(text):
        drivername = text.split("://", 1)[0]
    else:
        from sqlalchemy.exc import ArgumentError

        try:
            drivername = parsed.url.drivername
        except (ArgumentError, ValueError) as error:
            # The only int() of a parse: SQLAlchemy's of the port (never of a password).
            port = re.fullmatch(r"invalid literal for int\(\) with base 10: '(.*)'", str(error))
            if port is not None:
                raise bad_port(raw, port[1]) from None
            if text.count("@") > 1:
                raise unencoded_at(raw) from None
            raise ConfigurationError(
                f"Database URL {redact(raw)!r} is malformed; set FLOWDB_DATABASE_URL to a URL "
                "such as sqlite:////path/to/flowdb.db or postgresql+psycopg://user@host/dbname."
            ) from None
        if parsed.url.port is not None and not 1 <= parsed.url.port <= 65535:
            raise bad_port(raw, str(parsed.url.port))
    nul = nul_part(parsed)
    if nul is not None:
        raise nul_character(raw, nul)
    backend, _, driver = drivername.partition("+")
    dialect = dialect_class(backend)
    if dialect is None or driver not in dialect.drivers:
        raise ConfigurationError(
            f"Database URL {redact(raw)!r} uses {drivername!r}, which flowdb does not "
            f"support; use one of {supported_schemes()}."
        )
    dialect.validate_url(parsed, redact(raw))
    return parsed
