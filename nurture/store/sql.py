"""Small dialect-aware SQL helpers shared by the modules that write."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Insert,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
)
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
    """INSERT many rows in one statement (a bulk import); returns the result, with
    `returning`'s columns of the rows inserted, in no particular order.

    On PostgreSQL the rows travel as one JSON document (`json_to_recordset`): a short
    statement and one parameter whatever the batch, where a VALUES list of thousands of
    parameters costs more to build and parse than to insert. A value every row shares
    (a status, a time) is sent once. Python-side column defaults are not applied (each
    row would get the same one): a row names every column it needs.
    """
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql" and not returning:
        return _driver_executemany(session, table, rows, conflict)
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table)
    if dialect == "postgresql":
        stmt = stmt.from_select(list(rows[0]), _recordset(table, rows), include_defaults=False)
    if conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    if returning:
        stmt = stmt.returning(*returning)
    conn = session.connection()
    return conn.execute(stmt) if dialect == "postgresql" else conn.execute(stmt, rows)


def _driver_executemany(
    session: Session, table: Table, rows: list[dict[str, Any]], conflict: list[str] | None
) -> Any:
    """SQLite: the driver's executemany, each column's values converted once per distinct
    value (a batch shares its times and statuses), where SQLAlchemy would convert every
    parameter of every row."""
    dialect = session.get_bind().dialect
    names = list(rows[0])
    stmt = sqlite.insert(table).values({n: bindparam(n) for n in names})
    if conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    compiled = stmt.compile(dialect=dialect)
    order = compiled.positiontup or names
    convert = [_converter(table.c[n].type.dialect_impl(dialect).bind_processor(dialect))
               for n in order]  # fmt: skip
    params = [tuple(f(r[n]) for f, n in zip(convert, order, strict=True)) for r in rows]
    return session.connection().exec_driver_sql(str(compiled), params)


def _converter(process: Any) -> Any:
    if process is None:
        return lambda v: v
    seen: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            seen[value] = done = process(value)
            return done
        except TypeError:  # unhashable (a JSON object): converted each time
            return process(value)

    return convert


def _recordset(table: Table, rows: list[dict[str, Any]]) -> Any:
    names = list(rows[0])
    shared = {n for n in names if all(r[n] == rows[0][n] for r in rows)}
    varying = [n for n in names if n not in shared]
    if not varying:
        return select(*(constant(table.c[n], rows[0][n]) for n in names))
    doc = json.dumps([{n: r[n] for n in varying} for r in rows], default=_jsonable)
    records = (
        func.json_to_recordset(cast(bindparam(None, doc, type_=Text), JSON))
        .table_valued(*(column(n, table.c[n].type) for n in varying))
        .render_derived(name="r", with_types=True)
    )
    return select(*(constant(table.c[n], rows[0][n]) if n in shared else records.c[n]
                    for n in names)).select_from(records)  # fmt: skip


def constant(col: Any, value: Any) -> Any:
    """`value` bound as `col`'s type, for a SELECT list; cast only where PostgreSQL cannot
    infer the type (NULL, JSON): on SQLite a CAST to DATETIME would make a number."""
    bound = bindparam(None, value, type_=col.type)
    return cast(bound, col.type) if value is None or isinstance(col.type, JSON) else bound


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def among(session: Session, col: Any, values: list[Any]) -> Any:
    """`col IN (values)`; on PostgreSQL `col = ANY(array)`, one parameter however many."""
    if session.get_bind().dialect.name != "postgresql":
        return col.in_(values)
    return col == any_(bindparam(None, values, type_=postgresql.ARRAY(col.type)))


def stage(session: Session, name: str, source: Table, columns: list[str],
          rows: list[tuple[Any, ...]]) -> None:  # fmt: skip
    """A temporary table `name` with `columns` typed as in `source`, holding `rows`
    (dropped at commit on PostgreSQL, emptied first on SQLite).

    A bulk write stages its varying values here, then one INSERT … SELECT puts them in
    place with the values every row shares, ON CONFLICT and RETURNING included: on
    PostgreSQL the rows travel by COPY (the protocol's bulk path, no statement to build
    or parse per row), on SQLite by the driver's executemany of plain tuples.
    """
    # Every name here is the code's own (a table's columns), never input: S608 is moot.
    conn = session.connection()
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        empty = f"SELECT {names} FROM {source.name} WITH NO DATA"  # noqa: S608
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {empty}")
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cur, cur.copy(f"COPY {name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    empty = f"SELECT {names} FROM {source.name} WHERE 0"  # noqa: S608
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {name} AS {empty}")
    conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {name} ({names}) VALUES ({marks})", rows)  # noqa: S608


def insert_each(session: Session, table: Table, key: str, ids: list[int],
                values: dict[str, Any]) -> None:  # fmt: skip
    """One row per id (in column `key`), every other column `values`: a consent or an
    enrolment for each of a batch's new subscribers, made in the database by one
    INSERT … SELECT over the ids rather than sent row by row."""
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        param = bindparam(None, ids, type_=postgresql.ARRAY(Integer))
        source = func.unnest(param).table_valued("value").render_derived(name="ids")
    else:
        source = func.json_each(bindparam(None, json.dumps(ids), type_=Text)).table_valued("value")
    names = [key, *values]
    query = select(source.c.value, *(constant(table.c[n], v) for n, v in values.items()))
    session.connection().execute(table.insert().from_select(names, query, include_defaults=False))
