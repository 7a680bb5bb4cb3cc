"""Sunset: the `[sunset]` policy run by `run_sunset` (what `send-due` calls on every run)
over a list of mixed activity, against bare SQL that writes the same rows.

The list (PostgreSQL 1,000,000 subscribers, SQLite 100,000): a third opened an email ten
days ago, a third last opened one 200 days ago, a third never did (every fourth of those
joined a month ago, so is not inactive yet); every sixth also has an open of yesterday
made by a prefetcher (flagged bot), which must not count. The policy: 120 days, the
example's `win-back`, then unsubscribe.

- first: the run that finds the inactive (about half the list): a round each, and an
  enrolment in the win-back. Baseline: one hand-written `INSERT … SELECT` of the rounds
  (the same selection, with NOT EXISTS, planned with statistics) and one of the
  enrolments.
- quiet: the run right after, with nothing left to move: what a `send-due` pays when
  it looks for the newly inactive (once an hour). Baseline: the same selection, counted.
- between: a `send-due`'s run between two looks (only the open rounds are read).

Each first run starts from the same state (rounds and enrolments deleted, VACUUM
ANALYZE) and is checked: exactly the inactive people moved, as many as the baseline's.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import data
from bench.services import nurture_env, pg_database, workspace
from bench.stats import median

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = '\n[sunset]\ninactive_for = "120d"\nwinback = "win-back"\nthen = "unsubscribe"\n'


def load(engine: Engine, n: int) -> int:
    """The list, by set-based SQL; returns how many of it are inactive."""
    params = {"start": 1, "stop": n, "f": False, "t": True,
              "long_ago": data._at(engine, NOW - timedelta(days=400)),
              "lately": data._at(engine, NOW - timedelta(days=30)),
              "opened": data._at(engine, NOW - timedelta(days=10)),
              "old_open": data._at(engine, NOW - timedelta(days=200)),
              "bot_open": data._at(engine, NOW - timedelta(days=1))}  # fmt: skip
    series = data._series(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO subscribers (id, email, attributes, status, source, created_at, "  # noqa: S608 (series: SQL of ours)
            "confirmed_at, score, link_key) SELECT i, 'reader' || i || '@example.com', '{}', "
            "'active', 'import', CASE WHEN i % 12 = 11 THEN :lately ELSE :long_ago END, "
            f"CASE WHEN i % 12 = 11 THEN :lately ELSE :long_ago END, 0, 'key' || i FROM {series}"
        ), params)  # fmt: skip
        conn.execute(text(
            "INSERT INTO events (subscriber_id, kind, at, bot, data) SELECT i, 'open', "  # noqa: S608 (series: SQL of ours)
            "CASE WHEN i % 3 = 0 THEN :opened ELSE :old_open END, :f, '{}' "
            f"FROM {series} WHERE i % 3 <> 2"
        ), params)  # fmt: skip
        conn.execute(text(
            "INSERT INTO events (subscriber_id, kind, at, bot, data) "  # noqa: S608 (series: SQL of ours)
            f"SELECT i, 'open', :bot_open, :t, '{{}}' FROM {series} WHERE i % 6 = 1"
        ), params)  # fmt: skip
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('subscribers_id_seq', :n)"), {"n": n})
    data.analyze(engine)
    return sum(1 for i in range(1, n + 1) if i % 3 != 0 and i % 12 != 11)


#: The selection, written by hand: active, joined before the cutoff, no open or click
#: of a person since.
_INACTIVE = (
    "FROM subscribers s WHERE s.status = 'active' "
    "AND coalesce(s.confirmed_at, s.created_at) <= :cutoff AND NOT EXISTS (SELECT 1 FROM "
    "events e WHERE e.subscriber_id = s.id AND e.kind IN ('open', 'click') AND e.bot = :f "
    "AND e.at >= :cutoff)"
)


def bare_first(engine: Engine) -> tuple[float, int]:
    params = {"cutoff": data._at(engine, NOW - timedelta(days=120)), "f": False,
              "now": data._at(engine, NOW)}  # fmt: skip
    started = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.execute(text(
            "INSERT INTO sunsets (subscriber_id, outcome, started_at) "  # noqa: S608 (constant SQL)
            f"SELECT s.id, 'winback', :now {_INACTIVE}"
        ), params).rowcount  # fmt: skip
        conn.execute(text(
            "INSERT INTO enrollments (subscriber_id, sequence, round, status, next_step_id, "
            "next_due_at, enrolled_at) SELECT subscriber_id, 'win-back', 1, 'active', "
            "'still-with-us', :now, :now FROM sunsets"
        ), params)  # fmt: skip
    return time.perf_counter() - started, rows


def bare_quiet(engine: Engine) -> float:
    params = {"cutoff": data._at(engine, NOW - timedelta(days=120)), "f": False}
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text(
            f"SELECT count(*) {_INACTIVE} AND NOT EXISTS (SELECT 1 FROM sunsets r "  # noqa: S608 (constant SQL)
            "WHERE r.subscriber_id = s.id)"
        ), params).scalar_one()  # fmt: skip
    return time.perf_counter() - started


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM sunsets"))
        conn.execute(text("DELETE FROM enrollments"))
    data.analyze(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE sunsets"))


def measure(url: str, ws: Path, n: int, runs: int, log: Any) -> dict[str, Any]:
    from nurture.people.sunset import LOOK_EVERY
    from nurture.people.sunsetrun import run_sunset
    from nurture.settings import load_settings
    from nurture.store import engine as db

    engine = db.engine_for(url)
    db.upgrade(engine)
    inactive = load(engine, n)
    settings = load_settings(ws, env=nurture_env(ws, url, None))
    found: dict[str, list[float]] = {"first": [], "quiet": [], "between": [], "bare_first": [],
                                     "bare_quiet": []}  # fmt: skip
    for run in range(runs):
        log(
            f"  {engine.dialect.name} run {run + 1}/{runs}",
            end="",
        )
        reset(engine)
        seconds, rows = bare_first(engine)
        found["bare_first"].append(seconds)
        found["bare_quiet"].append(bare_quiet(engine))
        assert rows == inactive, (rows, inactive)
        reset(engine)
        started = time.perf_counter()
        moved = run_sunset(settings, NOW).counts
        found["first"].append(time.perf_counter() - started)
        assert moved.winback == inactive, (moved, inactive)
        started = time.perf_counter()
        assert run_sunset(settings, NOW).counts.parts() == []
        found["quiet"].append(time.perf_counter() - started)
        started = time.perf_counter()
        assert run_sunset(settings, NOW, look_every=LOOK_EVERY).counts.parts() == []
        found["between"].append(time.perf_counter() - started)
        log(f": first {found['first'][-1]:.2f} s, quiet {found['quiet'][-1]:.2f} s")
    medians = {k: median(v) for k, v in found.items()}
    return {"subscribers": n, "inactive": inactive, "runs": found, **medians,
            "first_ratio": medians["bare_first"] / medians["first"],
            "quiet_ratio": medians["bare_quiet"] / medians["quiet"]}  # fmt: skip


def run(*, runs: int = 3, log: Any = print, n: int = 1_000_000, sqlite_n: int = 100_000
        ) -> dict[str, Any]:  # fmt: skip
    results: dict[str, Any] = {}
    with workspace() as ws:
        (ws / "nurture.toml").write_text((ws / "nurture.toml").read_text() + POLICY)
        with pg_database("nurture_bench_sunset") as url:
            results["postgresql"] = measure(url, ws, n, runs, log)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/sunset.db"
            results["sqlite"] = measure(url, ws, sqlite_n, runs, log)
    return results
