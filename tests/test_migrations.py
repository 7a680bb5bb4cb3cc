"""Every command checks the database's revision against the newest migration without
Alembic (start-up time): the two ways of telling the head must agree."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from nurture.store import engine as db


def test_the_head_read_from_file_names_is_alembics_head():
    scripts = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    assert db.head_revision() == scripts.get_current_head()
    # each file is named by its revision and revises the one before: one straight line
    revisions = sorted(scripts.walk_revisions(), key=lambda r: r.revision)
    for before, after in zip(revisions, revisions[1:], strict=False):
        assert after.down_revision == before.revision
    for rev in revisions:
        assert rev.path.rsplit("/", 1)[-1].startswith(f"{rev.revision}_")


def test_a_database_reports_no_revision_then_the_head(database_url):
    engine = db.engine_for(database_url)
    if engine.dialect.name == "sqlite":
        assert db.current_revision(engine) is None  # a new file: nothing applied yet
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
