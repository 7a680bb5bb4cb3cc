"""broadcasts: newsletter issues, and their deliveries (one per subscriber, plus test copies)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("preheader", sa.String(length=300), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("segment", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("local_at", sa.String(length=16), nullable=True),
        sa.Column("archive", sa.Boolean(), nullable=False),
        sa.Column("checkpoint", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fanned_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
        sa.UniqueConstraint("slug", name=op.f("uq_broadcasts_slug")),
    )
    op.create_index("ix_broadcasts_due", "broadcasts", ["state", "send_at"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("broadcast_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_deliveries_broadcast_id_broadcasts"),
            "broadcasts",
            ["broadcast_id"],
            ["id"],
            ondelete="CASCADE",
        )
    # A partial unique index: one real email per broadcast and subscriber, any number
    # of test copies. Created outside the batch so SQLite keeps its WHERE clause.
    op.create_index(
        "uq_deliveries_broadcast_subscriber",
        "deliveries",
        ["broadcast_id", "subscriber_id"],
        unique=True,
        sqlite_where=sa.text("is_test = 0"),
        postgresql_where=sa.text("NOT is_test"),
    )


def downgrade() -> None:
    op.drop_index("uq_deliveries_broadcast_subscriber", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_deliveries_broadcast_id_broadcasts"), type_="foreignkey"
        )
        batch_op.drop_column("is_test")
        batch_op.drop_column("broadcast_id")
    op.drop_index("ix_broadcasts_due", table_name="broadcasts")
    op.drop_table("broadcasts")
