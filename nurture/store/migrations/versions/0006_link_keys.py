"""subscribers.link_key, ids never reused, and rate_counts

- `subscribers.link_key`: a random key signed into every confirm and unsubscribe link
  and checked on use, so a link acts only on the person it was sent to. Existing rows
  get one each here.
- SQLite hands out the highest id again once its row is deleted (a `forget`), so an
  old link could name the next person. AUTOINCREMENT stops that for subscribers and
  deliveries (open and click links name a delivery); SQLite can only add it by
  rebuilding the table. PostgreSQL sequences never go back, so nothing changes there.
- `rate_counts`: request counters shared by every web process when there is no Redis.

SQLite: `nurture.store.engine.upgrade` turns foreign keys off around migrations, or rebuilding
`subscribers` would cascade-delete every row that points at it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 20:00:00
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Rows given a key per UPDATE batch.
BATCH = 1000


def _fill_keys() -> None:
    bind = op.get_bind()
    ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM subscribers"))]
    update = sa.text("UPDATE subscribers SET link_key = :key WHERE id = :id")
    for start in range(0, len(ids), BATCH):
        bind.execute(update, [{"id": i, "key": secrets.token_urlsafe(12)}
                              for i in ids[start : start + BATCH]])  # fmt: skip


def _partial_indexes(create: bool) -> None:
    """Dropped around a SQLite rebuild of deliveries, and made again after it: the
    rebuild would lose their WHERE clauses."""
    if not create:
        op.drop_index("uq_deliveries_broadcast_subscriber", table_name="deliveries")
        op.drop_index("ix_deliveries_broadcast_recent", table_name="deliveries")
        return
    op.create_index("uq_deliveries_broadcast_subscriber", "deliveries",
                    ["broadcast_id", "subscriber_id"], unique=True,
                    sqlite_where=sa.text("is_test = 0"),
                    postgresql_where=sa.text("NOT is_test"))  # fmt: skip
    op.create_index("ix_deliveries_broadcast_recent", "deliveries", ["created_at"],
                    sqlite_where=sa.text("broadcast_id IS NOT NULL"),
                    postgresql_where=sa.text("broadcast_id IS NOT NULL"))  # fmt: skip


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("subscribers") as batch_op:
        batch_op.add_column(sa.Column("link_key", sa.String(length=32), nullable=True))
    _fill_keys()
    if sqlite:
        with op.batch_alter_table(
            "subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch_op:
            batch_op.alter_column("link_key", existing_type=sa.String(32), nullable=False)
        _partial_indexes(create=False)
        with op.batch_alter_table(
            "deliveries", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
        _partial_indexes(create=True)
    else:
        op.alter_column("subscribers", "link_key", existing_type=sa.String(32), nullable=False)
    op.create_table(
        "rate_counts",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("resets_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_counts")),
    )
    op.create_index(op.f("ix_rate_counts_resets_at"), "rate_counts", ["resets_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_counts_resets_at"), table_name="rate_counts")
    op.drop_table("rate_counts")
    with op.batch_alter_table("subscribers") as batch_op:
        batch_op.drop_column("link_key")
