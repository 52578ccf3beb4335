"""The names of the tables flowdb reads before anything else: a leaf every layer may use.

The dialects read these two to say where a database stands (``Dialect.read_catalog``)
without importing the modules that judge it (``status``) or write them (``bookkeeping``).
"""

from __future__ import annotations

#: Alembic's table of the current revision(s).
VERSION_TABLE = "alembic_version"
#: flowdb's record of migrations part way through (defined in ``bookkeeping``).
PROGRESS_TABLE = "flowdb_migration_progress"
