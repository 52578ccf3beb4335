"""Rename log.logger to name and work_queue.paused to is_paused, matching the API's fields.

Both dialects rename a column in place (SQLite since 3.25), so no table is copied.

Revision ID: 1b5e8c2f7d43
Revises: 0a7d3b9e5c21
Create Date: 2026-07-07 09:00:00
"""

from __future__ import annotations

from flowdb.database.migrations import helpers as h

revision: str = "1b5e8c2f7d43"
down_revision: str | None = "0a7d3b9e5c21"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = False  # renames columns the previous code uses


def upgrade() -> None:
    h.rename_column("log", "logger", "name")
    h.rename_column("work_queue", "paused", "is_paused")


def downgrade() -> None:
    h.rename_column("work_queue", "is_paused", "paused")
    h.rename_column("log", "name", "logger")
