"""deliveries.handed_at and deliveries.maybe_twice: which taken-back emails may have left

A worker marks a claimed delivery `handed_at` (committed) just before its SMTP
transaction starts, so `send-due` can tell a delivery it takes back from a lost worker
that was never handed to SMTP (sent once, later) from one that may already have been
accepted (`maybe_twice`, kept once it is sent again).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch rebuild on SQLite would drop the
    # table's AUTOINCREMENT (ids must never be reused: links name them) and the WHERE
    # of its partial indexes.
    op.add_column("deliveries", sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "deliveries",
        sa.Column("maybe_twice", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place, keeping AUTOINCREMENT and partial indexes.
    op.drop_column("deliveries", "maybe_twice")
    op.drop_column("deliveries", "handed_at")
