"""Fixtures: a copied workspace, settings on SQLite and PostgreSQL, a real SMTP sink;
for the distributed tests a Redis database of their own, a timing sink and real workers;
headless Chromium for the browser tests. Plain helpers live in tests/helpers/."""

from __future__ import annotations

import contextlib
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
from tests.helpers.browser import ARGS, CHROMIUM
from tests.helpers.distributed import BURST, SHORT, SINGLE, TimedHandler, Workers
from tests.services import REDIS_URL, Sink, fresh_pg_database, own_redis_database, unavailable

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


# -- distributed: PostgreSQL, Redis and real worker processes -------------------------
@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database (1-15) of this test's own, flushed afterwards."""
    import redis

    taken = contextlib.ExitStack()
    try:
        url = taken.enter_context(own_redis_database(REDIS_URL))
    except redis.RedisError as e:
        unavailable("Redis", e)
    except LookupError as e:
        pytest.fail(f"{e} for this test run")
    with taken:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    engine = db.engine_for(pg_database)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    return pg_database


@pytest.fixture
def timed_sink() -> Iterator[Sink]:
    sink = Sink()
    sink.handler = TimedHandler()
    sink.controller.handler = sink.handler
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def dist_env(workspace: Path, pg_url: str, redis_url: str, timed_sink: Sink) -> dict[str, str]:
    """A workspace with the `burst`, `single` and `short` sequences, on PostgreSQL and Redis."""
    (workspace / "sequences" / "burst.yaml").write_text(BURST)
    (workspace / "sequences" / "single.yaml").write_text(SINGLE)
    (workspace / "sequences" / "short.yaml").write_text(SHORT)
    notes = workspace / "templates" / "email" / "test"
    notes.mkdir()
    (notes / "note.html").write_text("<p>A short note for {{ subscriber.email }}.</p>\n")
    (notes / "note.txt").write_text("A short note for {{ subscriber.email }}.\n")
    return {
        "NURTURE_WORKSPACE": str(workspace),
        "NURTURE_DATABASE_URL": pg_url,
        "NURTURE_REDIS_URL": redis_url,
        "NURTURE_SMTP_URL": timed_sink.url,
        "NURTURE_BASE_URL": "https://crumb.example",
        "NURTURE_MAX_PER_DAY": "100",
    }


@pytest.fixture
def workers(dist_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(dist_env, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


# -- browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as e:
        unavailable("Playwright", e)
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Error as e:
            unavailable("Chromium", e)
        yield chromium
        chromium.close()
