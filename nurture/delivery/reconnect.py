"""The database connections a batch of sends writes through, and how it rides out a lost
connection (a PostgreSQL restart or failover takes seconds).

A worker that has handed an email to SMTP must record it, or `send-due` will take the
delivery back and send it again: so a write that fails because the connection went
away is tried again on a fresh connection, for a bounded time, before the worker gives
up. Every write of the send path is fenced by its claim's attempt number, so a write
that did commit before its answer was lost changes nothing when it runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.settings import Settings
from nurture.store.engine import get_engine

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to keep trying a write after the database connection was lost: a restart
#: takes a few seconds; past this the claim is left to `send-due`'s recovery.
RETRY_FOR = 30.0
#: Pause before the first fresh connection; doubles up to MAX_PAUSE.
FIRST_PAUSE = 0.2
MAX_PAUSE = 3.0


class Db:
    """A session for transactions and, on PostgreSQL, an autocommit connection on which
    one statement is a transaction in one round trip. Each is opened when first used
    and held for the whole batch (no checkout and pre-ping per transaction); `close()`
    drops them, and the next use opens fresh ones."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._conn: Connection | None = None
        self._session: Session | None = None
        self._autocommit: Connection | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._conn = self.engine.connect()
            self._session = Session(bind=self._conn)
        return self._session

    @property
    def autocommit(self) -> Connection | None:
        if self.engine.dialect.name != "postgresql":
            return None
        if self._autocommit is None:
            conn = self.engine.connect()
            conn.execution_options(isolation_level="AUTOCOMMIT")
            self._autocommit = conn
        return self._autocommit

    def close(self) -> None:
        for held in (self._session, self._conn, self._autocommit):
            if held is not None:
                with suppress(SQLAlchemyError):  # a dead connection may not close politely
                    held.close()
        self._conn = self._session = self._autocommit = None


@contextmanager
def connections(settings: Settings) -> Iterator[Db]:
    db = Db(get_engine(settings))
    try:
        yield db
    finally:
        db.close()


def lost(error: BaseException) -> bool:
    """Whether a database error means the connection or the server went away (worth a
    fresh connection), rather than a statement the database refused."""
    return isinstance(error, OperationalError | InterfaceError) or bool(
        getattr(error, "connection_invalidated", False)
    )


def reconnecting(db: Db, work: Callable[[], T], what: str) -> T:
    """`work()`, run again on fresh connections while the connection is lost, for up to
    RETRY_FOR seconds; `work` must be safe to repeat (fenced writes are)."""
    deadline = time.monotonic() + RETRY_FOR
    pause = FIRST_PAUSE
    while True:
        try:
            return work()
        except SQLAlchemyError as e:
            if not lost(e) or time.monotonic() + pause > deadline:
                raise
            log.warning("database connection lost while %s (%s); trying again on a fresh "
                        "connection in %.1f s", what, reason(e), pause)  # fmt: skip
        db.close()
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


def reason(error: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and parameters."""
    orig = getattr(error, "orig", None) or error
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:200]}"
