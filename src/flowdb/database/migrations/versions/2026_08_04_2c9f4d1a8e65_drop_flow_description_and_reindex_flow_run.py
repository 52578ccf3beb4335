"""Drop flow.description; index flow runs by (flow, start time) and (state, start time).

The API lists a flow's runs newest first and filters runs by state within a time
window; both single-column indexes are replaced by composite ones that serve those
queries and still serve the old lookups by their leading column.

Online (``migrations/online.py``): the new indexes are built first and the old ones
dropped, without blocking writes where the dialect can; the last phase only drops the
column. The previous code keeps working with the indexes, but not without the column.

Revision ID: 2c9f4d1a8e65
Revises: 1b5e8c2f7d43
Create Date: 2026-08-04 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations.online import OnlineMigration

revision: str = "2c9f4d1a8e65"
down_revision: str | None = "1b5e8c2f7d43"
branch_labels = None
depends_on = None


SERVES_PREVIOUS_CODE = False  # drops flow.description


def upgrade() -> None:
    online = OnlineMigration(revision)
    online.create_index("ix_flow_run__flow_id_start_time", "flow_run", ["flow_id", "start_time"])
    online.create_index(
        "ix_flow_run__state_type_start_time", "flow_run", ["state_type", "start_time"]
    )
    online.drop_index("ix_flow_run__flow_id")
    online.drop_index("ix_flow_run__state_type")
    online.contract()
    op.drop_column("flow", "description")
    online.finish()


def downgrade() -> None:
    op.drop_index("ix_flow_run__state_type_start_time", table_name="flow_run")
    op.drop_index("ix_flow_run__flow_id_start_time", table_name="flow_run")
    op.create_index("ix_flow_run__state_type", "flow_run", ["state_type"])
    op.create_index("ix_flow_run__flow_id", "flow_run", ["flow_id"])
    op.add_column("flow", sa.Column("description", sa.Text(), nullable=True))
