"""Rows for the benchmarks, written with set-based SQL (`INSERT … SELECT` over a series),
never through the ORM: a million subscribers load in seconds.

Subscribers `reader<i>@example.com` have ids 1..n; each is enrolled once in the example
sequence, `from-curious-to-customer`, with the enrolment's id equal to the subscriber's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from nurture import clock

SEQUENCE = "from-curious-to-customer"
#: The example sequence's education steps that have no gate: every one goes out as due.
STEPS = ("welcome", "know-your-audience", "get-known", "capture-leads",
         "content-that-teaches", "measure-what-works")  # fmt: skip
NAMES = ("Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun")
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin")


def _series(engine: Engine) -> str:
    """A FROM clause yielding `i` for :start..:stop: generate_series on PostgreSQL, a
    recursive CTE on SQLite (which has no generate_series of its own)."""
    if engine.dialect.name == "postgresql":
        return "generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS s(i)"
    return ("(WITH RECURSIVE c(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM c "
            "WHERE i < :stop) SELECT i FROM c) AS s")  # fmt: skip


def _at(engine: Engine, moment: datetime) -> Any:
    """A timestamp as the UTCDateTime column stores it on this dialect."""
    if engine.dialect.name == "sqlite":
        return moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def _case(values: tuple[str, ...], key: str = "i") -> str:
    """Picks one of `values` by `key`, round robin. SQL text built from this module's
    own constants, so the statements that use it carry `noqa: S608`: nothing in them
    comes from outside; every number is a bound parameter."""
    whens = " ".join(f"WHEN {n} THEN '{v}'" for n, v in enumerate(values))
    return f"CASE {key} % {len(values)} {whens} END"


def add_readers(
    engine: Engine, start: int, stop: int, *, due_every: int | None, now: datetime,
    opened_every: int | None = None,
) -> None:  # fmt: skip
    """Subscribers start..stop, each enrolled and sent the welcome three days ago.

    Every `due_every`-th enrolment has its second step due now (None: none is); the
    others are due tomorrow. Each subscriber also has the welcome's delivery in their
    history, as a real table would, so the claim's look-ups run against a table of this
    size; with `opened_every`, every so many of them opened it (an `open` event) and
    are tagged `engaged`, so the facts that goals and gates are decided on come from
    real events and tags tables too.
    """
    sent = now - timedelta(days=3)
    series = _series(engine)
    params = {"sent": _at(engine, sent), "due": _at(engine, now - timedelta(minutes=1)),
              "later": _at(engine, now + timedelta(days=1)), "f": False, "start": start,
              "stop": stop, "every": due_every or stop + 1, "sequence": SEQUENCE,
              "first": STEPS[0], "second": STEPS[1]}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO subscribers (id, email, first_name, timezone, attributes, status, "  # noqa: S608 (see _case)
            "source, created_at, confirmed_at, score, link_key) "
            f"SELECT i, 'reader' || i || '@example.com', {_case(NAMES)}, "
            f"{_case(ZONES)}, '{{}}', 'active', 'import', :sent, :sent, 0, 'key' || i "
            f"FROM {series}"
        ), params)  # fmt: skip
        conn.execute(text(
            "INSERT INTO enrollments (id, subscriber_id, sequence, status, next_step_id, "  # noqa: S608 (see _case)
            "next_due_at, enrolled_at, last_sent_at) "
            "SELECT i, i, :sequence, 'active', :second, "
            "CASE WHEN i % :every = 0 THEN :due ELSE :later END, :sent, :sent "
            f"FROM {series}"
        ), params)  # fmt: skip
        conn.execute(text(
            "INSERT INTO deliveries (subscriber_id, enrollment_id, kind, sequence, step_id, "  # noqa: S608 (see _case)
            "is_test, status, attempts, created_at, enqueued_at, claimed_at, sent_at) "
            "SELECT i, i, 'sequence', :sequence, :first, :f, 'sent', 1, "
            f":sent, :sent, :sent, :sent FROM {series}"
        ), params)  # fmt: skip
        if opened_every:
            opened = {**params, "opened": opened_every}
            conn.execute(text(
                "INSERT INTO events (subscriber_id, delivery_id, kind, at, bot, data) "
                "SELECT subscriber_id, id, 'open', :sent, :f, '{}' FROM deliveries "
                "WHERE enrollment_id BETWEEN :start AND :stop AND step_id = :first "
                "AND enrollment_id % :opened = 0"
            ), opened)  # fmt: skip
            conn.execute(text(
                f"INSERT INTO tags (subscriber_id, name) SELECT i, 'engaged' FROM {series} "  # noqa: S608 (see _case)
                "WHERE i % :opened = 0"
            ), opened)  # fmt: skip
        if engine.dialect.name == "postgresql":
            for table in ("subscribers", "enrollments"):
                conn.execute(text(
                    f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"  # noqa: S608 (a name of ours)
                ))  # fmt: skip
    analyze(engine)


def queue_steps(engine: Engine, count: int, now: datetime | None = None) -> list[int]:
    """Make the first `count` enrolments wait for a delivery that is queued now, one of
    the gate-free steps each, as `send-due` leaves them; returns the delivery ids."""
    now = now or clock.now()
    params = {"now": _at(engine, now), "sent": _at(engine, now - timedelta(days=3)),
              "f": False, "count": count}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM deliveries"))
        conn.execute(text(
            f"UPDATE enrollments SET status = 'active', next_step_id = {_case(STEPS, 'id')}, "  # noqa: S608 (see _case)
            "next_due_at = NULL, last_sent_at = :sent, ended_at = NULL, end_reason = NULL "
            "WHERE id <= :count"
        ), params)  # fmt: skip
        ids = conn.execute(text(
            "INSERT INTO deliveries (subscriber_id, enrollment_id, kind, sequence, step_id, "
            "is_test, status, attempts, created_at, enqueued_at) "
            "SELECT subscriber_id, id, 'sequence', sequence, next_step_id, :f, 'queued', 0, "
            ":now, :now FROM enrollments WHERE id <= :count ORDER BY id RETURNING id"
        ), params).scalars().all()  # fmt: skip
    analyze(engine)
    return sorted(ids)


def analyze(engine: Engine) -> None:
    """Fresh planner statistics (and no dead rows) after a bulk change, as autovacuum
    would give a table that changed this much."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE subscribers, enrollments, deliveries, events, tags"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")


def reset_due(engine: Engine, *, stop: int, due_every: int, after_id: int, now: datetime) -> None:
    """Undo a `send-due`: the deliveries it wrote (ids above `after_id`) are deleted and
    the enrolments it claimed (every `due_every`-th up to `stop`) are due again."""
    params = {"due": _at(engine, now - timedelta(minutes=1)),
              "sent": _at(engine, now - timedelta(days=3)), "after": after_id, "stop": stop,
              "every": due_every, "second": STEPS[1]}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM deliveries WHERE id > :after"), params)
        conn.execute(text(
            "UPDATE enrollments SET status = 'active', next_step_id = :second, "
            "next_due_at = :due, last_sent_at = :sent, ended_at = NULL, end_reason = NULL "
            "WHERE id <= :stop AND id % :every = 0"
        ), params)  # fmt: skip
    analyze(engine)


def last_id(engine: Engine, table: str) -> int:
    """The highest id in `table` (one of ours, by name), 0 when it is empty."""
    with engine.connect() as conn:
        query = f"SELECT coalesce(max(id), 0) FROM {table}"  # noqa: S608 (a table name of ours)
        return int(conn.execute(text(query)).scalar_one())
