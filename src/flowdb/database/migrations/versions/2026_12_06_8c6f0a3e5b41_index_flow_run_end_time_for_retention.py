"""Index flow_run.end_time, so that retention walks expired runs without a scan.

``flowdb database clean`` (``database/retention.py``) takes finished runs whose
``end_time`` is before a cut-off in ``(end_time, id)`` batches; without an index each
batch would read the whole ``flow_run`` table. Every foreign key a clean deletes
through already had a covering index (``lint``'s ``fk-without-index`` rule holds the
head schema to that); this is the one index the clean's own walk needed.

Online (``migrations/online.py``): ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so
the API keeps writing flow runs while it builds. Expand only: the previous release's
code serves on this schema unchanged.

Revision ID: 8c6f0a3e5b41
Revises: 7b5e9c2f4d3a
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from alembic import op

from flowdb.database.migrations.online import OnlineMigration

revision: str = "8c6f0a3e5b41"
down_revision: str | None = "7b5e9c2f4d3a"
branch_labels = None
depends_on = None


SERVES_PREVIOUS_CODE = True  # a new index only
PHASE = "expand"


def upgrade() -> None:
    online = OnlineMigration(revision)
    online.create_index("ix_flow_run__end_time", "flow_run", ["end_time"])
    online.contract()
    online.finish()


def downgrade() -> None:
    op.drop_index("ix_flow_run__end_time", table_name="flow_run")
