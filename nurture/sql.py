"""Small dialect-aware SQL helpers shared by the modules that write."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import JSON, Insert, Table, Text, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(session: Session, model: Any, index: list[str]) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` on the unique index named by its columns."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing(index_elements=index)  # type: ignore[no-any-return]


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], *,
    conflict: list[str] | None = None, returning: tuple[Any, ...] = (),
) -> Any:  # fmt: skip
    """INSERT many rows in one statement (a bulk import); the result has `returning`'s
    columns in the rows' order.

    On PostgreSQL the rows travel as one array per column (`SELECT unnest(...)`): a short
    statement whatever the batch, where a VALUES list of thousands of parameters costs
    more to build and parse than to insert. Python-side column defaults are not applied
    (each row would get the same one): a row names every column it needs.
    """
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table)
    if dialect == "postgresql":
        names = list(rows[0])
        stmt = stmt.from_select(names, select(*(_column(table.c[n], [r[n] for r in rows])
                                                for n in names)), include_defaults=False)  # fmt: skip
    if conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    if returning:
        stmt = stmt.returning(*returning, sort_by_parameter_order=dialect != "postgresql")
    conn = session.connection()
    return conn.execute(stmt) if dialect == "postgresql" else conn.execute(stmt, rows)


def _column(column: Any, values: list[Any]) -> Any:
    """One array to unnest, or one value when every row has the same (a status, a time)."""
    first = values[0]
    if all(v == first for v in values):
        value = bindparam(None, first, type_=column.type)
        return cast(value, column.type) if first is None or isinstance(column.type, JSON) else value
    if isinstance(column.type, JSON):  # as text, made JSON again by the server
        texts = [None if v is None else json.dumps(v) for v in values]
        return cast(func.unnest(bindparam(None, texts, type_=postgresql.ARRAY(Text))), column.type)
    return func.unnest(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
