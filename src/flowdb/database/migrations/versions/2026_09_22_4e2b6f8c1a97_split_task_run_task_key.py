"""Split task_run.task_key "<key>:<dynamic key>" into task_key and dynamic_key.

Data migration. The text before the first ':' stays in task_key, the rest moves to
the new dynamic_key ('' when there was no ':'). The unique key becomes
(flow_run_id, task_key, dynamic_key). The downgrade joins the two columns again, so
every value round-trips, except a task_key that ended in a bare ':' ("a:"), which
comes back as "a".

The old unique constraint is dropped before the split (two calls "t:0" and "t:1" of
one task share task_key "t" afterwards) and the new one created after it.

Revision ID: 4e2b6f8c1a97
Revises: 3d1a5e7b9f86
Create Date: 2026-09-22 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "4e2b6f8c1a97"
down_revision: str | None = "3d1a5e7b9f86"
branch_labels = None
depends_on = None

OLD_UNIQUE = "uq_task_run__flow_run_id_task_key"
NEW_UNIQUE = "uq_task_run__flow_run_id_task_key_dynamic_key"


def task_run(*extra: object) -> sa.Table:
    """task_run as revision b7e2d9a1c4f0 created it, without its unique key, plus ``extra``."""
    return h.frozen_table(
        "task_run",
        *h.base_columns(),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("task_key", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state_type", h.state_type(), nullable=True),
        sa.Column("state_name", sa.String(255), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_time", h.timestamp(), nullable=True),
        sa.Column("end_time", h.timestamp(), nullable=True),
        h.json_column("tags", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_task_run"),
        h.fk("task_run", "flow_run_id", "flow_run", "CASCADE"),
        sa.Index("ix_task_run__state_type_start_time", "state_type", "start_time"),
        *extra,
    )


def upgrade() -> None:
    before = task_run(sa.UniqueConstraint("flow_run_id", "task_key", name=OLD_UNIQUE))
    with op.batch_alter_table("task_run", copy_from=before) as batch:
        batch.drop_constraint(OLD_UNIQUE, type_="unique")
        batch.add_column(sa.Column("dynamic_key", sa.String(255), nullable=True))

    colon = h.text_position(":", "task_key")
    h.execute_in_batches(
        "task_run",
        f"UPDATE task_run SET "
        f"dynamic_key = CASE WHEN {colon} > 0 THEN substr(task_key, {colon} + 1) ELSE '' END, "
        f"task_key = CASE WHEN {colon} > 0 THEN substr(task_key, 1, {colon} - 1) "
        f"ELSE task_key END "
        "WHERE {batch}",
    )

    split = task_run(sa.Column("dynamic_key", sa.String(255), nullable=True))
    with op.batch_alter_table("task_run", copy_from=split) as batch:
        batch.alter_column("dynamic_key", existing_type=sa.String(255), nullable=False)
        batch.create_unique_constraint(NEW_UNIQUE, ["flow_run_id", "task_key", "dynamic_key"])


def downgrade() -> None:
    after = task_run(
        sa.Column("dynamic_key", sa.String(255), nullable=False),
        sa.UniqueConstraint("flow_run_id", "task_key", "dynamic_key", name=NEW_UNIQUE),
    )
    with op.batch_alter_table("task_run", copy_from=after) as batch:
        batch.drop_constraint(NEW_UNIQUE, type_="unique")

    h.execute_in_batches(
        "task_run",
        "UPDATE task_run SET task_key = CASE WHEN dynamic_key = '' THEN task_key "
        "ELSE task_key || ':' || dynamic_key END WHERE {batch}",
    )

    joined = task_run(sa.Column("dynamic_key", sa.String(255), nullable=False))
    with op.batch_alter_table("task_run", copy_from=joined) as batch:
        batch.drop_column("dynamic_key")
        batch.create_unique_constraint(OLD_UNIQUE, ["flow_run_id", "task_key"])
