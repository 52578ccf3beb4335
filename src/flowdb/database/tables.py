"""The names of the tables flowdb reads before anything else: a leaf every layer may use.

The dialects read these to say where a database stands (``Dialect.read_catalog``)
without importing the modules that judge it (``status``) or write them (``bookkeeping``).
"""

from __future__ import annotations

#: Alembic's table of the current revision(s).
VERSION_TABLE = "alembic_version"
#: flowdb's record of migrations part way through (defined in ``bookkeeping``).
PROGRESS_TABLE = "flowdb_migration_progress"
#: The version of flowdb's own tables (defined in ``bookkeeping``): SQLite's catalog
#: read takes it too, so an upgrade at head needs no SQLAlchemy.
BOOKKEEPING_VERSION_TABLE = "flowdb_bookkeeping_version"
