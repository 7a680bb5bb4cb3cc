"""enrollments.round and enrollments.waiting_for

`reentry: true` lets a subscriber go through a sequence again: each time through is
its own enrolment row (round 1, 2, …), so the deliveries of every round are kept and
the unique (enrolment, step) rule still stops duplicates within a round. The unique
(subscriber, sequence) rule becomes (subscriber, sequence, round).

`waiting_for` keeps the planner's reason a due step was held back (send window, daily
cap, gate, newsletter day), for `subscribers show`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("round", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("waiting_for", sa.String(length=200), nullable=True))
        batch.drop_constraint("uq_enrollments_subscriber_sequence", type_="unique")
        batch.create_unique_constraint(
            "uq_enrollments_subscriber_sequence_round", ["subscriber_id", "sequence", "round"]
        )


def downgrade() -> None:
    # Later rounds cannot fit the one-row-per-sequence rule: keep each person's first
    # (their events stay, without the email they were about).
    op.execute(
        "UPDATE events SET delivery_id = NULL WHERE delivery_id IN (SELECT id FROM deliveries"
        " WHERE enrollment_id IN (SELECT id FROM enrollments WHERE round > 1))"
    )
    op.execute(
        "DELETE FROM deliveries WHERE enrollment_id IN (SELECT id FROM enrollments WHERE round > 1)"
    )
    op.execute("DELETE FROM enrollments WHERE round > 1")
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_constraint("uq_enrollments_subscriber_sequence_round", type_="unique")
        batch.create_unique_constraint(
            "uq_enrollments_subscriber_sequence", ["subscriber_id", "sequence"]
        )
        batch.drop_column("waiting_for")
        batch.drop_column("round")
