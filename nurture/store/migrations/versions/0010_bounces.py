"""bounce_messages and suppression_removals: bounces handled once, removals logged

`bounce_messages` keeps a key for every bounce, complaint or provider event already
processed, so a mailbox read from two hosts, or a webhook sent again, is handled once.
`suppression_removals` records who took an address off the suppression list, and why.
`deliveries.message_id` gets an index: bounces are matched by it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New tables only: no existing table is rebuilt.
    op.create_table(
        "bounce_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_messages")),
        sa.UniqueConstraint("key", name=op.f("uq_bounce_messages_key")),
    )
    op.create_table(
        "suppression_removals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_removals")),
    )
    op.create_index("ix_suppression_removals_email_hash", "suppression_removals", ["email_hash"])

    # A bounce that quotes our Message-ID finds its delivery by it (an index adds no
    # table rebuild on SQLite).
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_id", "deliveries")
    op.drop_index("ix_suppression_removals_email_hash", "suppression_removals")
    op.drop_table("suppression_removals")
    op.drop_table("bounce_messages")
