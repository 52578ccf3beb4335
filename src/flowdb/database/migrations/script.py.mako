<%!
def docstring(text):
    """The message made safe inside a triple-quoted docstring."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"')
%>"""${message | docstring}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from flowdb.database.migrations import helpers as h  # noqa: F401
from flowdb.database.migrations.online import OnlineMigration  # noqa: F401

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

# Can the previous release's code keep serving on this schema? True only for expand-only
# changes (new tables, nullable or defaulted columns, new indexes); False for drops,
# renames, NOT NULL and new constraints its writes would break. `flowdb database lint`
# checks this against the SQL, and /api/ready relies on it during rolling upgrades.
SERVES_PREVIOUS_CODE = True

# Rules of `flowdb database lint` this revision may break, each with its reason, e.g.
# LINT_ALLOW = {"require-concurrent-index-creation": "index on a new, empty table"}

# A change to a table that grows (flow_run, task_run, their state tables, log, artifact)
# goes online, in phases of their own short transactions (see migrations/online.py):
#
#     online = OnlineMigration(revision)
#     h.add_column_if_missing("flow_run", sa.Column("x", sa.Integer(), nullable=True))
#     online.backfill("flow_run", "UPDATE flow_run SET x = 0 WHERE x IS NULL AND {batch}")
#     online.create_index("ix_flow_run__x", "flow_run", ["x"])
#     online.prove_not_null("flow_run", "x")
#     online.contract()  # only metadata changes from here on, under the strong lock
#     online.set_not_null("flow_run", "x")  # SQLite: a batch_alter_table rebuild instead
#     online.finish()


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
