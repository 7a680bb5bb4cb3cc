"""Engine and sessions; migrations applied with Alembic (the SQLite default upgrades itself)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from nurture.errors import ConfigError
from nurture.settings import Settings
from nurture.urls import describe, redact

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic announces its context at INFO on every schema check, in every worker process;
# nurture says itself what it migrated.
logging.getLogger("alembic").setLevel(logging.WARNING)


def _private_sqlite_file(url: str) -> None:
    """Create a new SQLite file as 0600: it holds every address and token nonce. SQLite
    gives its -wal and -shm files the database file's permissions."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.parent.is_dir() and not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first, alike
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so two writers queue instead of failing
    on a lock upgrade, which is what makes claiming safe across processes on SQLite."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """The engine for this URL, one per process (not checked for its revision: get_engine)."""
    if url in _engines:
        return _engines[url]
    key = url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite"):
            _private_sqlite_file(url)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_pragmas(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except Exception as e:  # a malformed URL or a missing driver
        raise ConfigError(
            f"NURTURE_DATABASE_URL {redact(key)} is not usable: {describe(e, key)}"
        ) from None
    _engines[key] = engine
    return engine


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported here: a tenth of a second at start-up

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration's revision, read from the file names without Alembic (whose
    import and script parsing cost every command a fifth of a second): each migration
    file is named by its revision (`0010_bounces.py` is 0010) and revises the one before,
    so the head is the largest name. tests/test_migrations.py holds Alembic to this."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None for an empty database), as Alembic records it."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Apply every migration (or go to `revision`); a no-op when already there.

    On SQLite, foreign keys are off while migrating: batch mode rebuilds a table by
    dropping the old one, and with them on that drop deletes the rows that point at it
    (ON DELETE CASCADE: an enrolment's deliveries). SQLite only lets the setting change
    outside a transaction, so it is set on the bare connection, before it begins, and
    the migrated data is checked with `PRAGMA foreign_key_check` before commit."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                (command.downgrade if down else command.upgrade)(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise ConfigError(f"a migration left a broken reference: {tuple(broken)}")
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


_ready: set[str] = set()


def get_engine(settings: Settings) -> Engine:
    """The engine for these settings, checked once per process to be at the head revision."""
    engine = engine_for(settings.database_url)
    if settings.database_url in _ready:
        return engine
    try:
        revision = current_revision(engine)
    except Exception as e:
        raise ConfigError(
            f"cannot reach NURTURE_DATABASE_URL: {describe(e, settings.database_url)}"
        ) from None
    if revision != head_revision():
        if engine.dialect.name == "sqlite":
            upgrade(engine)
        else:
            raise ConfigError("the database is not up to date: run `nurture db upgrade`")
    _ready.add(settings.database_url)
    return engine


_factories: dict[int, sessionmaker[Session]] = {}


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    engine = get_engine(settings)
    factory = _factories.get(id(engine))
    if factory is None:
        factory = _factories[id(engine)] = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def dispose(url: str) -> None:
    engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()
    _ready.discard(url)


def dispose_all() -> None:
    """Forget pooled connections, e.g. after a fork."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _ready.clear()
    _factories.clear()


def upgrade_database(settings: Settings) -> tuple[str | None, str | None]:
    """`nurture db upgrade`: apply every migration; returns the revision before (None
    for an empty database) and after. ConfigError with the driver's own message when
    the database cannot be upgraded."""
    engine = engine_for(settings.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    except Exception as e:
        raise ConfigError(
            f"cannot upgrade NURTURE_DATABASE_URL: {describe(e, settings.database_url)}"
        ) from None
    return before, after
