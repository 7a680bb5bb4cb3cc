"""Fixtures: a copied workspace, settings on SQLite and PostgreSQL, a real SMTP sink."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.content import sequences
from nurture.delivery.compose import renderer_for
from nurture.settings import Settings, load_settings
from nurture.store import engine as db
from nurture.store.tables import Base
from tests.services import Sink, fresh_pg_database

ROOT = Path(__file__).parent.parent
SENDER = "Maya at Crumb & Co <hello@crumb.example>"
POSTAL = "Crumb & Co, 12 Mill Lane, Bristol"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the repository's example workspace."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copytree(ROOT / "sequences", ws / "sequences")
    shutil.copytree(ROOT / "templates", ws / "templates")
    (ws / "nurture.toml").write_text(f'from = "{SENDER}"\npostal_address = "{POSTAL}"\n')
    return ws


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    with fresh_pg_database() as url:
        engine = db.engine_for(url)
        db.upgrade(engine)
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL (emptied before each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nurture.db'}"
        return
    url = request.getfixturevalue("pg_database")
    engine = db.engine_for(url)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    yield url


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def env(workspace: Path, database_url: str, sink: Sink) -> dict[str, str]:
    """Environment for a workspace on the parametrised database, sending to the sink."""
    return {
        "NURTURE_WORKSPACE": str(workspace),
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_SMTP_URL": sink.url,
        "NURTURE_BASE_URL": "https://crumb.example",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env["NURTURE_WORKSPACE"], env=env)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test sees its own workspace files and connections."""
    yield
    sequences._cache.clear()
    renderer_for.cache_clear()
    from nurture.delivery import transports

    transports.close_thread_transport()
