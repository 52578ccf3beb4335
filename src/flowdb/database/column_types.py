"""Column types that behave the same on SQLite and PostgreSQL.

Migrations do not use these (a migration is frozen in time and spells out plain
SQLAlchemy types); the ORM models do, and an autogenerate comparison proves that the
two agree.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from flowdb.database.dialects import dialect_class


class Timestamp(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp, stored in UTC on every dialect.

    PostgreSQL stores ``timestamptz`` natively. SQLite has no time zones, so values are
    converted to UTC and stored naive, and read back as UTC-aware datetimes.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[dt.datetime]:
        """``DATETIME(6)`` on MySQL/MariaDB (microseconds, as on the other dialects)."""
        found = dialect_class(dialect.name)
        special = found.timestamp_type() if found is not None else None
        return dialect.type_descriptor(special if special is not None else self.impl)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Normalise to UTC; reject naive datetimes, whose zone would be a guess."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: flowdb stores timezone-aware times only")
        value = value.astimezone(dt.UTC)
        return value if _stores_time_zones(dialect.name) else value.replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Return UTC-aware datetimes whatever the dialect stored."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


@functools.cache
def _stores_time_zones(name: str) -> bool:
    """Whether the named dialect keeps a timestamp's zone (else UTC is stored naive)."""
    found = dialect_class(name)
    return found is None or found.features.stores_time_zones


#: JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class StateType(enum.StrEnum):
    """The kinds of state a flow run or task run can be in."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


def state_type_column_type() -> sa.Enum:
    """The ``state_type`` enum: a named type on PostgreSQL, a plain string on SQLite.

    The PostgreSQL type is created and dropped by the migrations, never implicitly.
    """
    return sa.Enum(
        StateType,
        name="state_type",
        values_callable=lambda members: [member.value for member in members],
        create_constraint=False,
        validate_strings=True,
    )


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC (the default for timestamp columns)."""
    return dt.datetime.now(dt.UTC)
