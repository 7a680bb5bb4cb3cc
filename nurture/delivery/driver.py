"""The statements run for every email sent (statements.SENT_AND_HANDED and its
kin), executed on the database driver's own cursor.

SQLAlchemy's per-execution work (cache lookup, parameter processing, result wrapping,
and on SQLite a session transaction's events) costs more than the driver itself spends
on such a statement, and these run once per email. The statements are still
SQLAlchemy's, compiled once for the dialect, with bound parameters only; a driver error
is raised as SQLAlchemy's own (a lost connection as OperationalError, the connection
invalidated), so callers handle it as any other.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Dialect, Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

T = TypeVar("T")
#: Runs one statement in a transaction; answers the rows it changed.
Run = Callable[[Executable, dict[str, Any]], int]


@dataclass(frozen=True)
class Ready:
    """A statement's SQL for one dialect, the values of its literal parameters and the
    bind processors of its typed ones (aware datetimes, for instance)."""

    sql: str
    literals: dict[str, Any]
    processors: dict[str, Any]
    #: The parameters' order, for a driver that takes them by position (sqlite3).
    order: tuple[str, ...] | None

    def values(self, params: dict[str, Any]) -> dict[str, Any] | list[Any]:
        values = self.literals | params
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        return values if self.order is None else [values[name] for name in self.order]


@cache
def compiled(statement: ClauseElement, dialect: Dialect) -> Ready:
    done = cast(SQLCompiler, statement.compile(dialect=dialect))
    literals = {k: v for k, v in done.params.items() if v is not None}
    processors = {
        name: process
        for name, bind in done.binds.items()
        if (process := bind.type.bind_processor(dialect)) is not None
    }
    order = tuple(done.positiontup) if done.positional and done.positiontup else None
    return Ready(str(done), literals, processors, order)


class DriverCursor:
    """The driver's own cursor on one SQLAlchemy connection, made when first used."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.cursor: Any = None

    def one(self, statement: Executable, params: dict[str, Any]) -> tuple[Any, ...]:
        """The first row of `statement` with `params`."""
        row = self._run(statement, params).fetchone()
        assert row is not None
        return tuple(row)

    def transaction(self, work: Callable[[Run], T]) -> T:
        """`work(run)` in one SQLite transaction (`BEGIN IMMEDIATE`, as store.engine
        begins every one); `run(statement, params)` answers the rows it changed."""
        self._raw("BEGIN IMMEDIATE")
        try:
            done = work(lambda statement, params: int(self._run(statement, params).rowcount))
            self._raw("COMMIT")
        except BaseException:
            if self.cursor is not None:
                with suppress(Exception):  # the error that came first is the one to tell
                    self.cursor.execute("ROLLBACK")
            raise
        return done

    def _raw(self, command: str) -> None:
        self._guarded(command, (), lambda cursor: cursor.execute(command))

    def _run(self, statement: Executable, params: dict[str, Any]) -> Any:
        assert isinstance(statement, ClauseElement)
        fast = compiled(statement, self.conn.dialect)
        values = fast.values(params)
        return self._guarded(fast.sql, values, lambda cursor: cursor.execute(fast.sql, values))

    def _guarded(self, sql: str, values: Any, call: Callable[[Any], Any]) -> Any:
        dialect = self.conn.dialect
        raw = self.conn.connection.dbapi_connection
        try:
            if self.cursor is None:
                self.cursor = raw.cursor()  # type: ignore[union-attr]
            call(self.cursor)
            return self.cursor
        except dialect.loaded_dbapi.Error as e:
            gone = dialect.is_disconnect(e, raw, self.cursor)
            self.cursor = None
            if gone:
                self.conn.invalidate(e)
            raise DBAPIError.instance(sql, values, e, dialect.loaded_dbapi.Error,
                                      connection_invalidated=gone, dialect=dialect) from e  # fmt: skip
