"""ix_deliveries_broadcast_recent: the broadcast deliveries by creation time

`send-due` asks, every batch, whether a broadcast delivery was written in the last
week (`broadcast.sameday.broadcasts_near`). Without this index PostgreSQL answered it
with a sequential scan of the whole deliveries table, every batch. Partial, so the
sequence deliveries (most of the table) are not in it and cost nothing to insert.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Outside a batch, so SQLite keeps the WHERE clause (as in 0003).
    op.create_index(
        "ix_deliveries_broadcast_recent",
        "deliveries",
        ["created_at"],
        sqlite_where=sa.text("broadcast_id IS NOT NULL"),
        postgresql_where=sa.text("broadcast_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_broadcast_recent", table_name="deliveries")
