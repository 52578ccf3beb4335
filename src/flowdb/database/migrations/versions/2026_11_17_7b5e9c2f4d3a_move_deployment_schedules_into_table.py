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
def has_schedule() -> str:
    """Rows of deployment with a schedule."""
    return f"schedule IS NOT NULL AND {h.as_text('schedule')} <> 'null'"


def copy(where: str) -> str:
    """Copy the schedules of deployments ``where`` into deployment_schedule (again: update)."""
    return (
        "INSERT INTO deployment_schedule (id, created, updated, deployment_id, schedule) "
        f"SELECT id, created, updated, id, schedule FROM deployment WHERE {where} "
        + h.upsert_update("id", ["schedule", "updated"])
    )


def upgrade() -> None:
    online = OnlineMigration(revision)
    if h.dialect().ddl_commits or not h.has_table("deployment_schedule"):
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
    online.backfill("deployment", copy(f"{has_schedule()} AND {{batch}}"))
    online.contract()
    # MySQL: a rerun after the column was dropped (its DDL commits by itself) is done here.
    if online.offline or not h.dialect().ddl_commits or h.has_column("deployment", "schedule"):
        op.execute(copy(has_schedule()))  # what changed meanwhile (deployments are few)
        op.execute(
            "DELETE FROM deployment_schedule WHERE deployment_id = id AND id IN "
            f"(SELECT id FROM deployment WHERE NOT ({has_schedule()}))"
        )
        op.drop_column("deployment", "schedule")
    online.finish()


def downgrade() -> None:
    op.add_column("deployment", h.json_column("schedule", nullable=True))
    if h.still_needed(lambda: h.has_table("deployment_schedule")):
        h.execute_in_batches(
            "deployment",
            "UPDATE deployment SET schedule = (SELECT ds.schedule FROM deployment_schedule ds "
            "WHERE ds.deployment_id = deployment.id ORDER BY ds.created, ds.id LIMIT 1) "
            "WHERE {batch}",
        )
    op.drop_table("deployment_schedule")
