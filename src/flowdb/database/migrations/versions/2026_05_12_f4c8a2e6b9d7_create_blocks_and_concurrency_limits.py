"""Create block_type, block_document and concurrency_limit.

Revision ID: f4c8a2e6b9d7
Revises: e9b3c7d5f2a4
Create Date: 2026-05-12 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowdb.database.migrations import helpers as h

revision: str = "f4c8a2e6b9d7"
down_revision: str | None = "e9b3c7d5f2a4"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = True  # creates tables only


def upgrade() -> None:
    op.create_table(
        "block_type",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("slug", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("logo_url", sa.String(2048), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_block_type"),
        sa.UniqueConstraint("slug", name="uq_block_type__slug"),
    )
    op.create_table(
        "block_document",
        *h.base_columns(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("block_type_id", sa.Uuid(), nullable=False),
        h.json_column("data", default="{}"),
        sa.Column("is_anonymous", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_block_document"),
        h.fk("block_document", "block_type_id", "block_type", "CASCADE"),
        sa.UniqueConstraint("block_type_id", "name", name="uq_block_document__block_type_id_name"),
    )
    op.create_table(
        "concurrency_limit",
        *h.base_columns(),
        sa.Column("tag", sa.String(255), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=False),
        h.json_column("active_slots", default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_concurrency_limit"),
        sa.UniqueConstraint("tag", name="uq_concurrency_limit__tag"),
    )


def downgrade() -> None:
    op.drop_table("concurrency_limit")
    op.drop_table("block_document")
    op.drop_table("block_type")
