"""MariaDB/MySQL's part of a clean: the cleaner lock (a ``GET_LOCK`` name of its own).

InnoDB reuses the pages a clean frees by itself, so there is no space step.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

_PREFIX = "flowdb-clean:"


@contextmanager
def cleaner_lock(engine: Engine, database_name: str) -> Iterator[bool]:
    """Try the cleaner lock of ``database_name`` without waiting; yield whether it is held."""
    import sqlalchemy as sa

    # GET_LOCK names are server-wide and at most 64 characters: a hash keeps them apart.
    name = f"{_PREFIX}{zlib.crc32(database_name.encode('utf-8')):08x}:{database_name}"[:64]
    with engine.connect() as connection:
        held = connection.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
        try:
            yield held
        finally:
            if held:
                connection.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
