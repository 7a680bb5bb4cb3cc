"""sequence_versions: the sequence files and templates nurture last ran with

`send-due`, the worker and `serve` record each sequence's file and the templates its
steps use, with a content hash, when the hash changes; `nurture plan` compares the
workspace against them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: nothing else is rebuilt.
    op.create_table(
        "sequence_versions",
        sa.Column("sequence", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_sequence_versions")),
    )


def downgrade() -> None:
    op.drop_table("sequence_versions")
