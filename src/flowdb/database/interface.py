"""What the API server calls on start: make sure the schema is at head, cheaply.

``ensure_schema()`` is idempotent and safe to call from every replica at once. When
the database is already at head it costs one small query and does not import Alembic;
otherwise it upgrades under the migration lock, where exactly one caller does the work
and the others wait, then find the database at head.
"""

from __future__ import annotations

from flowdb.database.history import load_history
from flowdb.database.status import SchemaStatus, require_known_revision, schema_status
from flowdb.database.urls import configured_database_url
from flowdb.errors import SchemaNotAtHeadError


def ensure_schema(*, migrate: bool = True) -> SchemaStatus:
    """Bring the database to head (or, with ``migrate=False``, insist that it is there).

    Never downgrades: a database stamped by a newer flowdb raises
    ``DatabaseNewerThanCodeError`` before anything is touched.
    """
    database = configured_database_url()
    history = load_history()
    status = schema_status(database, history)
    require_known_revision(status, database)
    if status.at_head:
        return status
    if not migrate:
        raise SchemaNotAtHeadError(
            f"The database at {database.redacted()} is at revision {status.current or 'base'}, "
            f"{status.pending} migration(s) behind this flowdb; run 'flowdb database upgrade -y' "
            "or set FLOWDB_MIGRATE_ON_START=true."
        )
    from flowdb.database.alembic_commands import alembic_upgrade

    alembic_upgrade()
    return schema_status(database, history)
