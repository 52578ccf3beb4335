"""Move each deployment's schedule into deployment_schedule, so a deployment can have many.

Data migration. Every deployment with a schedule gets one deployment_schedule row
(active, id = the deployment's id); deployment.schedule is dropped. The downgrade
puts back each deployment's oldest schedule, the one the older schema can hold.

Online data migration (``migrations/online.py``): the new table comes first, the
schedules are copied in key-range batches of their own transactions, and the last
phase (deployments are few) copies again what the running API changed meanwhile,
removes the copies of schedules it cleared, and drops deployment.schedule. The
previous code cannot keep serving: it reads and writes deployment.schedule.

Revision ID: 7b5e9c2f4d3a
Revises: 6a4d8b1e3c29
Create Date: 2026-11-17 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h
from flowdb.database.migrations.online import OnlineMigration

revision: str = "7b5e9c2f4d3a"
down_revision: str | None = "6a4d8b1e3c29"
branch_labels = None
depends_on = None


SERVES_PREVIOUS_CODE = False  # drops deployment.schedule, which the previous code uses

# A JSON null ('null') is "no schedule" just like SQL NULL.
HAS_SCHEDULE = "schedule IS NOT NULL AND CAST(schedule AS TEXT) <> 'null'"
COPY = (
    "INSERT INTO deployment_schedule (id, created, updated, deployment_id, schedule) "
    "SELECT id, created, updated, id, schedule FROM deployment WHERE {where} "
    "ON CONFLICT (id) DO UPDATE SET schedule = excluded.schedule, updated = excluded.updated"
)


def upgrade() -> None:
    online = OnlineMigration(revision)
    if not h.has_table("deployment_schedule"):
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
    online.backfill("deployment", COPY.format(where=f"{HAS_SCHEDULE} AND {{batch}}"))
    online.contract()
    op.execute(COPY.format(where=HAS_SCHEDULE))  # what changed meanwhile (deployments are few)
    op.execute(
        "DELETE FROM deployment_schedule WHERE deployment_id = id AND id IN "
        f"(SELECT id FROM deployment WHERE NOT ({HAS_SCHEDULE}))"
    )
    op.drop_column("deployment", "schedule")
    online.finish()


def downgrade() -> None:
    op.add_column("deployment", h.json_column("schedule", nullable=True))
    h.execute_in_batches(
        "deployment",
        "UPDATE deployment SET schedule = (SELECT ds.schedule FROM deployment_schedule ds "
        "WHERE ds.deployment_id = deployment.id ORDER BY ds.created, ds.id LIMIT 1) "
        "WHERE {batch}",
    )
    op.drop_table("deployment_schedule")
