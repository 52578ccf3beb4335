"""Move each deployment's schedule into deployment_schedule, so a deployment can have many.

Data migration. Every deployment with a schedule gets one deployment_schedule row
(active, id = the deployment's id); deployment.schedule is dropped. The downgrade
puts back each deployment's oldest schedule, the one the older schema can hold.

Revision ID: 7b5e9c2f4d3a
Revises: 6a4d8b1e3c29
Create Date: 2026-11-17 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "7b5e9c2f4d3a"
down_revision: str | None = "6a4d8b1e3c29"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_schedule",
        *h.base_columns(),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        h.json_column("schedule"),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("max_scheduled_runs", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_schedule"),
        h.fk("deployment_schedule", "deployment_id", "deployment", "CASCADE"),
    )
    op.create_index(
        "ix_deployment_schedule__deployment_id", "deployment_schedule", ["deployment_id"]
    )
    # A JSON null ('null') is "no schedule" just like SQL NULL.
    h.execute_in_batches(
        "deployment",
        "INSERT INTO deployment_schedule (id, created, updated, deployment_id, schedule) "
        "SELECT id, created, updated, id, schedule FROM deployment "
        "WHERE schedule IS NOT NULL AND CAST(schedule AS TEXT) <> 'null' AND {batch}",
    )
    op.drop_column("deployment", "schedule")


def downgrade() -> None:
    op.add_column("deployment", h.json_column("schedule", nullable=True))
    h.execute_in_batches(
        "deployment",
        "UPDATE deployment SET schedule = (SELECT ds.schedule FROM deployment_schedule ds "
        "WHERE ds.deployment_id = deployment.id ORDER BY ds.created, ds.id LIMIT 1) "
        "WHERE {batch}",
    )
    op.drop_table("deployment_schedule")
