"""PostgreSQL's part of a clean (``flowdb database clean``): the cleaner lock, space back.

The cleaner lock is a session advisory lock on a key of its own (the schema's high
half, "clnr" low), never the migration lock's, taken without waiting. Space: autovacuum
makes dead rows reusable; ``VACUUM (ANALYZE)`` of the tables a clean touched does it at
once without blocking reads or writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flowdb.database.dialects.postgresql.lock import lock_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: The low half of the cleaner lock key ("clnr"); the high half is the schema's.
CLEANER_KEY = 0x636C6E72


@contextmanager
def cleaner_lock(engine: Engine, transaction_pooling: bool) -> Iterator[bool]:
    """Try the cleaner lock without waiting; yield whether this process holds it."""
    import sqlalchemy as sa

    with engine.connect() as connection:
        key = (lock_key(connection) & ~0xFFFFFFFF) | CLEANER_KEY
        if transaction_pooling:
            # Behind a transaction pooler a session lock would stay with whichever
            # server session ran it: hold a transaction lock, in a transaction kept
            # open (so on one server session) until the clean ends.
            held = bool(
                connection.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
                ).scalar()
            )
            try:
                yield held
            finally:
                connection.rollback()
            return
        held = bool(
            connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        )
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()


def reclaim_space(engine: Engine, tables: list[str]) -> str:
    """``VACUUM (ANALYZE)`` the tables (outside a transaction); one line saying so."""
    import sqlalchemy as sa

    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.execute(sa.text(f"VACUUM (ANALYZE) {', '.join(tables)}"))
    return f"VACUUM (ANALYZE) of {', '.join(tables)}: dead rows reusable now"
