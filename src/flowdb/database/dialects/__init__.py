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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowdb.database.dialects.base import Dialect

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
