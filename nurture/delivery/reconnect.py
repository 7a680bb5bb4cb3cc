"""The database connections a batch of sends writes through, and how it rides out a lost
connection (a PostgreSQL restart or failover takes seconds).

A worker that has handed an email to SMTP must record it, or `send-due` will take the
delivery back and send it again: so a write that fails because the connection went
away is tried again on a fresh connection, for a bounded time, before the worker gives
up. Every write of the send path is fenced by its claim's attempt number, so a write
that did commit before its answer was lost changes nothing when it runs again.

A sent email's record does not wait for the disk (statements.SENT_AND_HANDED): the
server has it at once, so a worker killed afterwards loses nothing, but a crash of the
server itself (not a restart, which writes everything first) can lose the records of
its last moments. So `Db` keeps each such record until a commit that does wait for the
disk has followed it (the next group's claim, or the one made at the end of a batch),
and writes the ones it keeps again on every fresh connection: with the worker alive, a
database crash loses no record. Only a worker lost together with the server can leave
unrecorded the emails of each thread's group in progress (at most sending.GROUP).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.delivery import statements as sql
from nurture.delivery.driver import DriverCursor, Run
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
        self._cursor: DriverCursor | None = None
        self._lite: DriverCursor | None = None  # on the session's connection, for SQLite
        #: Records committed without waiting for the disk, not yet followed by a commit
        #: that did: (statement, parameters), written again on a fresh connection.
        self.unsure: list[tuple[Executable, dict[str, Any]]] = []

    @property
    def session(self) -> Session:
        return self._session or self._open_session()

    def _open_session(self) -> Session:
        if self.unsure and self._autocommit is None:
            self._open_autocommit()  # fresh connections: first what a crash may have lost
        self._conn = self.engine.connect()
        self._session = Session(bind=self._conn)
        self._lite = DriverCursor(self._conn)
        return self._session

    @property
    def autocommit(self) -> Connection | None:
        if self.engine.dialect.name != "postgresql":
            return None
        return self._autocommit or self._open_autocommit()

    def _open_autocommit(self) -> Connection:
        conn = self.engine.connect()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        self._autocommit, self._cursor = conn, DriverCursor(conn)
        for statement, params in self.unsure:  # fenced: a record that was kept changes nothing
            conn.execute(statement, params)
        return conn

    def record(
        self, sent: dict[str, Any], move: dict[str, Any] | None, *, again: dict[str, Any]
    ) -> tuple[int, int]:
        """A sent email's record, its enrolment's `move` and the next email's hand mark
        (statements.SENT, MOVE_ON, HAND) in one transaction on the driver's cursor
        (driver.py): one statement on PostgreSQL, which does not wait for the disk and
        is kept, with the parameters to write it `again` with, until one that waits has
        followed. Returns the rows recorded sent and marked handed (0 or 1 each)."""
        if self.autocommit is not None:
            assert self._cursor is not None
            one = sql.SENT_MOVED_AND_HANDED if move else sql.SENT_AND_HANDED
            held, handed, _ = self._cursor.one(one, sent | (move or {}))
            self.unsure.append((one, again | (move or {})))
            return int(held), int(handed)

        def work(run: Run) -> tuple[int, int]:
            held = run(sql.SENT, sent)
            if held and move:
                run(sql.MOVE_ON, sent | move)
            return held, run(sql.HAND, sent) if sent["hid"] is not None else 0

        if self._lite is None:
            self._open_session()
        assert self._lite is not None
        return self._lite.transaction(work)

    def durable(self) -> None:
        """A commit that waited for the disk has just been made (one that wrote: a
        transaction that changes nothing writes no commit): what came before is safe."""
        self.unsure.clear()

    def flush(self) -> None:
        """Make the records kept so far durable with one commit that waits for the disk."""
        if self.unsure and self.autocommit is not None:
            self.autocommit.execute(sql.DURABLE)
            self.unsure.clear()

    def close(self) -> None:
        for held in (self._session, self._conn, self._autocommit):
            if held is not None:
                with suppress(SQLAlchemyError):  # a dead connection may not close politely
                    held.close()
        self._conn = self._session = self._autocommit = self._cursor = self._lite = None


@contextmanager
def connections(settings: Settings) -> Iterator[Db]:
    db = Db(get_engine(settings))
    try:
        yield db
        if db.unsure:
            reconnecting(db, db.flush, "making the last records durable")
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
