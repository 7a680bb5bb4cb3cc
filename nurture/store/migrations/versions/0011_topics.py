"""left_topics, subscribers.paused_until, consents.topics, broadcasts.topic: readers' choices

`left_topics` holds the topics a subscriber left on the preference centre (or left
unticked on a signup form); `subscribers.paused_until` a pause of everything;
`consents.topics` the topics a consent record is about; `broadcasts.topic` the topic an
issue belongs to (NULL: the newsletter).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "left_topics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            ondelete="CASCADE",
            name=op.f("fk_left_topics_subscriber_id_subscribers"),
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_left_topics")),
        sa.UniqueConstraint("subscriber_id", "topic", name="uq_left_topics_topic"),
    )
    # Plain ADD COLUMN on both databases: a batch rebuild on SQLite would drop the
    # AUTOINCREMENT of `subscribers` (ids must never be reused: links name them).
    op.add_column("subscribers", sa.Column("paused_until", sa.DateTime(timezone=True)))
    op.add_column("consents", sa.Column("topics", sa.Text()))
    op.add_column("broadcasts", sa.Column("topic", sa.String(100)))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place, keeping AUTOINCREMENT.
    op.drop_column("broadcasts", "topic")
    op.drop_column("consents", "topics")
    op.drop_column("subscribers", "paused_until")
    op.drop_table("left_topics")
