"""The one statement run for every email sent on PostgreSQL (statements.SENT_AND_HANDED
and its enrolment-moving twin), executed on the database driver's own cursor.

SQLAlchemy's per-execution work (cache lookup, parameter processing, result wrapping)
costs about twice what psycopg itself spends on such a statement, and this runs once
per email. The statement is still SQLAlchemy's, compiled once for the dialect, with
bound parameters only; a driver error is raised as SQLAlchemy's own (a lost connection
as OperationalError, the connection invalidated), so callers handle it as any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


@dataclass(frozen=True)
class Ready:
    """A statement's SQL for one dialect, the values of its literal parameters and the
    bind processors of its typed ones (aware datetimes, for instance)."""

    sql: str
    literals: dict[str, Any]
    processors: dict[str, Any]

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        values = self.literals | params
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        return values


@cache
def compiled(statement: ClauseElement, dialect: Dialect) -> Ready:
    done = cast(SQLCompiler, statement.compile(dialect=dialect))
    literals = {k: v for k, v in done.params.items() if v is not None}
    processors = {
        name: process
        for name, bind in done.binds.items()
        if (process := bind.type.bind_processor(dialect)) is not None
    }
    return Ready(str(done), literals, processors)


class DriverCursor:
    """The driver's own cursor on one SQLAlchemy connection, made when first used."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.cursor: Any = None

    def one(self, statement: Executable, params: dict[str, Any]) -> tuple[Any, ...]:
        """The first row of `statement` with `params`."""
        assert isinstance(statement, ClauseElement)
        dialect = self.conn.dialect
        fast = compiled(statement, dialect)
        values = fast.values(params)
        raw = self.conn.connection.dbapi_connection
        try:
            if self.cursor is None:
                self.cursor = raw.cursor()  # type: ignore[union-attr]
            self.cursor.execute(fast.sql, values)
            row = self.cursor.fetchone()
        except dialect.loaded_dbapi.Error as e:
            gone = dialect.is_disconnect(e, raw, self.cursor)
            self.cursor = None
            if gone:
                self.conn.invalidate(e)
            raise DBAPIError.instance(fast.sql, values, e, dialect.loaded_dbapi.Error,
                                      connection_invalidated=gone, dialect=dialect) from e  # fmt: skip
        assert row is not None
        return tuple(row)
