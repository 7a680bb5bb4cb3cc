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
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("maybe_twice", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("maybe_twice")
        batch_op.drop_column("handed_at")
