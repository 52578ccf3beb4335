"""Comparing the live database schema with the ORM models (``flowdb database check``).

Uses Alembic's autogenerate comparison, the same one ``revision --autogenerate`` uses,
so "no differences" here means a new revision would have nothing to write.
"""

from __future__ import annotations

from typing import Any

from flowdb.database.urls import DatabaseUrl


def schema_differences(database: DatabaseUrl) -> list[str]:
    """Each difference between the database and the models, as one readable line."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from flowdb.database.engines import create_sync_engine
    from flowdb.database.migrations.helpers import include_in_comparison
    from flowdb.database.orm_models import Base

    engine = create_sync_engine(database, application_name="flowdb-check")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": include_in_comparison},
            )
            return [_describe(diff) for diff in compare_metadata(context, Base.metadata)]
    finally:
        engine.dispose()


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(item) for item in diff)
    action, *details = diff
    names = []
    for detail in details:
        name = getattr(detail, "name", None)
        if name is not None:
            table = getattr(detail, "table", None)
            names.append(
                f"{table.name}.{name}" if table is not None and table.name != name else name
            )
        elif isinstance(detail, str):
            names.append(detail)
    # Column diffs carry the table name and then "table.column": keep the precise one.
    names = [n for n in names if not any(other.startswith(f"{n}.") for other in names)]
    return f"{action.replace('_', ' ')}: {', '.join(names) or details}"
