"""Migration 0006 on a database with people in it: nothing lost, every subscriber given
a link key, and on SQLite ids that are never handed out twice. Both databases."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from nurture.store import engine as db
from nurture.store.tables import Base

ROWS = """
INSERT INTO subscribers (email, attributes, status, source, created_at, score)
VALUES ('ana@example.com', '{}', 'active', 'cli', '2026-01-01', 0),
       ('bo@example.com', '{}', 'active', 'cli', '2026-01-01', 0);
INSERT INTO tags (subscriber_id, name) VALUES (1, 'bakery'), (2, 'web');
INSERT INTO deliveries (subscriber_id, kind, status, attempts, is_test, created_at)
VALUES (2, 'confirm', 'sent', 1, false, '2026-01-01');
"""


def at_0005(url: str) -> None:
    engine = db.engine_for(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # the fixture's database is at head
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    cfg = db.alembic_config(url)
    with engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    with engine.begin() as conn:
        for statement in ROWS.strip().split(";\n"):
            conn.execute(text(statement))


def test_0006_keeps_everyone_and_gives_each_a_key(database_url):
    at_0005(database_url)
    engine = db.engine_for(database_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        keys = dict(conn.execute(text("SELECT email, link_key FROM subscribers")).all())
        tags = conn.execute(text("SELECT count(*) FROM tags")).scalar()
        deliveries = conn.execute(text("SELECT count(*) FROM deliveries")).scalar()
    assert set(keys) == {"ana@example.com", "bo@example.com"}
    assert all(len(k) >= 16 for k in keys.values()) and len(set(keys.values())) == 2
    assert (tags, deliveries) == (2, 1)  # the table rebuilds cascaded nothing away

    with engine.begin() as conn:  # the highest id, freed, is not handed out again
        conn.execute(text("DELETE FROM subscribers WHERE id = 2"))
        conn.execute(text("INSERT INTO subscribers (email, attributes, status, source, "
                          "created_at, score, link_key) VALUES ('cy@example.com', '{}', "
                          "'pending', 'form', '2026-01-02', 0, 'k')"))  # fmt: skip
        new_id = conn.execute(text("SELECT id FROM subscribers WHERE email = 'cy@example.com'"))
        assert new_id.scalar() == 3
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            indexes = dict(conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'deliveries'"
            ).all())  # fmt: skip
            assert "WHERE is_test = 0" in indexes["uq_deliveries_broadcast_subscriber"]
            assert "WHERE broadcast_id IS NOT NULL" in indexes["ix_deliveries_broadcast_recent"]


def test_the_models_agree_with_the_migrations(database_url):
    engine = db.engine_for(database_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_at_head_sqlite_still_never_reuses_ids_and_keeps_partial_indexes(tmp_path):
    """Later migrations must not rebuild these tables without AUTOINCREMENT (a batch
    rebuild on SQLite drops it, and the WHERE of partial indexes)."""
    url = f"sqlite:///{tmp_path / 'head.db'}"
    db.upgrade(db.engine_for(url))
    with db.engine_for(url).connect() as conn:
        tables = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all())
    for table in ("subscribers", "deliveries"):
        assert "AUTOINCREMENT" in tables[table], table
    assert "WHERE is_test = 0" in tables["uq_deliveries_broadcast_subscriber"]
    assert "WHERE broadcast_id IS NOT NULL" in tables["ix_deliveries_broadcast_recent"]
