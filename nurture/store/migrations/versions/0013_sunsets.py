"""sunsets and last_runs: each round of the [sunset] policy, and when it last looked

New tables only: `sunsets` has one row each time a subscriber is found inactive,
naming the win-back enrolment they were sent and how it ended (won back, unsubscribed
as inactive, newsletters stopped, left); `last_runs` says when periodic work (looking
for the newly inactive) last ran; `events` gets an index for "opened or clicked since".
`subscribers` and `deliveries` are untouched.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sunsets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_sunsets_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_sunsets_enrollment_id_enrollments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sunsets")),
    )
    op.create_index("ix_sunsets_subscriber_outcome", "sunsets", ["subscriber_id", "outcome"])
    op.create_index("ix_sunsets_enrollment_id", "sunsets", ["enrollment_id"])
    # "opened or clicked since" for segments and the sunset: an index range per person
    # (a new index adds no table rebuild on SQLite).
    op.create_index("ix_events_engagement", "events", ["subscriber_id", "kind", "at"])
    op.create_table(
        "last_runs",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_last_runs")),
    )


def downgrade() -> None:
    op.drop_table("last_runs")
    op.drop_index("ix_events_engagement", table_name="events")
    op.drop_index("ix_sunsets_enrollment_id", table_name="sunsets")
    op.drop_index("ix_sunsets_subscriber_outcome", table_name="sunsets")
    op.drop_table("sunsets")
