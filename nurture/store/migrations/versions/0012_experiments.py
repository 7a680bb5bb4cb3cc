"""deliveries.variant, broadcasts.experiment and pick_at, experiment_ends: experiments

Every email of an experiment records the variant it is (`holdout` on the skipped
steps of a subscriber a sequence holds out); a broadcast keeps its variants and test
share as scheduled, and when its winner is due to be picked; `experiment_ends` records
each ended experiment and the variant everyone gets from then on.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch rebuild on SQLite would drop the
    # AUTOINCREMENT of deliveries (ids must never be reused: links name them).
    op.add_column("deliveries", sa.Column("variant", sa.String(64), nullable=True))
    op.add_column("broadcasts", sa.Column("experiment", sa.JSON(), nullable=True))
    op.add_column("broadcasts", sa.Column("pick_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "experiment_ends",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kept", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("how", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_experiment_ends")),
    )


def downgrade() -> None:
    op.drop_table("experiment_ends")
    # SQLite 3.35+ drops a column in place, keeping AUTOINCREMENT and partial indexes.
    op.drop_column("broadcasts", "pick_at")
    op.drop_column("broadcasts", "experiment")
    op.drop_column("deliveries", "variant")
