"""The enrolment-rounds migration keeps existing enrolments and their deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from nurture.store import engine as db
from tests.services import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_pg_database() as url:
        yield url
        db.engine_for(url).dispose()


def migrate(url: str, revision: str, down: bool = False) -> None:
    db.upgrade(db.engine_for(url), revision, down=down)


def test_existing_enrolments_become_round_one_and_a_second_round_fits(empty_url):
    script = db.alembic_config(empty_url)
    from alembic.script import ScriptDirectory

    before = ScriptDirectory.from_config(script).get_revision("0007").down_revision
    migrate(empty_url, str(before))
    engine = db.engine_for(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO subscribers (id, email, attributes, status, source, "
                             "created_at, score, link_key) VALUES (1, 'a@example.com', '{}', "
                             "'active', 'cli', CURRENT_TIMESTAMP, 0, 'k1')"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO enrollments (id, subscriber_id, sequence, status, "
                             "enrolled_at) VALUES (1, 1, 'gear', 'completed', CURRENT_TIMESTAMP)"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO deliveries (subscriber_id, enrollment_id, kind, "
                             "sequence, step_id, is_test, status, attempts, created_at) VALUES "
                             "(1, 1, 'sequence', 'gear', 'hello', false, 'sent', 1, "
                             "CURRENT_TIMESTAMP)"))  # fmt: skip
    migrate(empty_url, "head")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT round FROM enrollments")).scalars().all() == [1]
        conn.execute(sa.text("INSERT INTO enrollments (id, subscriber_id, sequence, status, "
                             "round, enrolled_at) VALUES (2, 1, 'gear', 'active', 2, "
                             "CURRENT_TIMESTAMP)"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO deliveries (subscriber_id, enrollment_id, kind, "
                             "sequence, step_id, is_test, status, attempts, created_at) VALUES "
                             "(1, 2, 'sequence', 'gear', 'hello', false, 'sent', 1, "
                             "CURRENT_TIMESTAMP)"))  # fmt: skip
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() == 2
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO enrollments (subscriber_id, sequence, status, round, "
                             "enrolled_at) VALUES (1, 'gear', 'active', 2, CURRENT_TIMESTAMP)"))  # fmt: skip
    migrate(empty_url, str(before), down=True)  # the first round is kept
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id FROM enrollments")).scalars().all() == [1]
        assert conn.execute(sa.text("SELECT enrollment_id FROM deliveries")).scalars().all() == [1]
