"""Scheduling: `nurture send-due` claiming the due steps of a large table, against a bare
`INSERT … SELECT` of the same rows plus pipelined Redis pushes of as many messages.

nurture: the real command, in a process of its own (so the time includes starting
Python, and its peak RSS is the command's own), in Redis mode so it claims, writes the
deliveries and enqueues them, and sends nothing. PostgreSQL: 1,000,000 subscribers and
enrolments (plus each one's past delivery; a third of them opened it and are tagged),
the first 100,000 due; SQLite: 100,000 and every tenth of them. Peak RSS is also
measured with a table of 200,000 on PostgreSQL, to show that it does not grow with the
table.

baseline: one `INSERT INTO deliveries … SELECT … FROM enrollments WHERE due` returning
the ids, then the ids pushed to Redis in as many messages as nurture sends
(`tasks.CHUNK` ids each), pipelined 1,000 pushes a round trip.

Each run, of either, starts from the same state (`data.reset_due`, then a CHECKPOINT),
and is checked: exactly the due rows written, none left due, as many queue messages.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from bench import data
from bench.services import PYTHON, ROOT, nurture_env, pg_database, redis_database, workspace
from bench.stats import median

#: Every so many readers opened their welcome email and carry a tag: the events and tags
#: tables are not empty, so the facts goals and gates are decided on are read from
#: tables of realistic size.
OPENED = 3


def _now() -> datetime:
    from nurture import clock

    return clock.now()


#: Runs a command and reports its wall time, peak RSS and CPU time (as JSON, to the file
#: named first). A small process of its own starts it, because Linux counts in a child's
#: ru_maxrss the memory of the process it was forked from (kept across exec): started
#: from this benchmark, which holds a loaded database's worth of objects, send-due would
#: be charged for them.
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
pid = subprocess.Popen(sys.argv[2:]).pid
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024,
               "cpu_s": usage.ru_utime + usage.ru_stime,
               "returncode": os.waitstatus_to_exitcode(status)}, f)
"""


def measured_send_due(env: dict[str, str]) -> dict[str, Any]:
    """`nurture send-due` in its own process: what it said, its wall time from start to
    exit (Python's start-up included), and its own peak RSS and CPU time."""
    with tempfile.TemporaryDirectory() as tmp:
        report, out, err = (Path(tmp) / name for name in ("report.json", "out", "err"))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            subprocess.run([PYTHON, "-c", _LAUNCHER, str(report), PYTHON, "-m", "nurture",
                            "send-due"], env=env, cwd=ROOT, stdout=stdout, stderr=stderr,
                           check=True)  # fmt: skip
        found = json.loads(report.read_text())
        said, complaint = out.read_text(), err.read_text()
    if found.pop("returncode") != 0:
        raise RuntimeError(f"send-due failed: {complaint[-2000:]}")
    line = said.strip().splitlines()[-1]
    due = int(re.search(r"(\d+) due", line).group(1))  # type: ignore[union-attr]
    return {**found, "rows": due, "summary": line}


def check_claimed(engine: Engine, redis_url: str, after: int, due: int) -> int:
    """That the run just made claimed exactly `due` steps: `due` deliveries written (ids
    above `after`), none left due, and how many queue messages carry them."""
    from nurture.queue import QUEUE

    with engine.connect() as conn:
        written = conn.execute(
            text("SELECT count(*) FROM deliveries WHERE id > :after AND status = 'queued'"),
            {"after": after},
        ).scalar_one()
        left = conn.execute(
            text(
                "SELECT count(*) FROM enrollments WHERE status = 'active' AND next_due_at <= :now"
            ),
            {"now": data._at(engine, _now())},
        ).scalar_one()
    client = redis.Redis.from_url(redis_url)
    messages = int(client.llen(f"dramatiq:{QUEUE}"))
    client.close()
    if written != due or left != 0:
        raise RuntimeError(f"send-due wrote {written} deliveries of {due} due, left {left} due")
    return messages


def baseline(engine: Engine, redis_url: str, chunk: int) -> dict[str, Any]:
    """The same rows by one INSERT … SELECT, and the same messages pushed, pipelined."""
    now = data._at(engine, _now())
    started = time.perf_counter()
    with engine.begin() as conn:
        ids = conn.execute(text(
            "INSERT INTO deliveries (subscriber_id, enrollment_id, kind, sequence, step_id, "
            "is_test, status, attempts, created_at, enqueued_at) "
            "SELECT subscriber_id, id, 'sequence', sequence, next_step_id, :f, 'queued', 0, "
            ":now, :now FROM enrollments WHERE status = 'active' AND next_due_at <= :now "
            "RETURNING id"
        ), {"now": now, "f": False}).scalars().all()  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    messages = 0
    for i, start in enumerate(range(0, len(ids), chunk)):
        pipe.rpush("bench:baseline", json.dumps({
            "queue_name": "nurture", "actor_name": "send_deliveries",
            "args": [ids[start:start + chunk]], "kwargs": {}, "options": {},
            "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000),
        }))  # fmt: skip
        messages += 1
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - started
    pushed = int(client.llen("bench:baseline"))
    client.delete("bench:baseline")
    client.close()
    if pushed != messages:
        raise RuntimeError(f"baseline pushed {messages} messages, Redis holds {pushed}")
    return {"seconds": elapsed, "rows": len(ids), "messages": messages}


def explain_claim(settings: Any) -> list[dict[str, Any]]:
    """EXPLAIN (SQLite: EXPLAIN QUERY PLAN) of every statement one batch of `claim_due`
    runs, captured as it runs (in a transaction rolled back afterwards): which index, or
    which sequential scan."""
    from nurture.content.sequences import catalog_for
    from nurture.journeys.scheduling import claim_due
    from nurture.store import engine as db

    engine = db.get_engine(settings)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("EXPLAIN", "BEGIN")):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            claim_due(
                Session(bind=conn), catalog_for(settings.sequences_dir), _now(), settings=settings
            )
            plans = []
            for statement, params in _distinct(seen):
                if engine.dialect.name == "sqlite":
                    found = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                    lines = [row[-1] for row in found]
                else:
                    lines = list(conn.exec_driver_sql("EXPLAIN " + statement, params).scalars())
                plans.append({"sql": " ".join(statement.split())[:90], "scans": _scans(lines)})
            trans.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return plans


def _distinct(seen: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    shapes: dict[str, tuple[str, Any]] = {}
    for statement, params in seen:
        shapes.setdefault(statement, (statement, params))
    return list(shapes.values())


_SCAN = re.compile(r"((?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)"
                   r"(?: Backward)?(?: using| on) \S+(?: on \S+)?)")  # fmt: skip
#: SQLite's query plan: `SEARCH t USING INDEX ix (a=?)` or `SCAN t` (a full scan).
_SQLITE_SCAN = re.compile(r"^((?:SEARCH|SCAN) [^(]*?)(?: \(|$)")


def _scans(plan: list[str]) -> list[str]:
    found: list[str] = []
    for line in plan:
        for scan in _SCAN.findall(line) + _SQLITE_SCAN.findall(line.strip()):
            if scan not in found:
                found.append(scan)
    return found or ["(no table scanned)"]


def _table_case(engine: Engine, env: dict[str, str], redis_url: str, runs: int, *, stop: int,
                due_every: int, log: Any, with_baseline: bool = True) -> dict[str, Any]:  # fmt: skip
    """`runs` times: the baseline, then send-due, each from the same state (`reset_due`:
    the same `stop // due_every` enrolments due, nothing else written); both checked to
    have done the same work, the same rows written and as many messages enqueued."""
    from nurture.queue import CHUNK

    due = stop // due_every
    after = data.last_id(engine, "deliveries")
    nurture_runs, baselines = [], []
    _settle(engine)
    for i in range(runs):
        if with_baseline:
            baselines.append(baseline(engine, redis_url, CHUNK))
            data.reset_due(engine, stop=stop, due_every=due_every, after_id=after, now=_now())
            _settle(engine)
        nurture_runs.append(measured_send_due(env))
        nurture_runs[-1]["messages"] = check_claimed(engine, redis_url, after, due)
        data.reset_due(engine, stop=stop, due_every=due_every, after_id=after, now=_now())
        _flush_queue(redis_url)
        _settle(engine)
        done = nurture_runs[-1]
        if done["rows"] != due or (with_baseline and baselines[-1]["rows"] != due):
            raise RuntimeError(f"{due} due, but send-due claimed {done['rows']}"
                               + (f", the baseline {baselines[-1]['rows']}" if baselines else ""))  # fmt: skip
        if with_baseline and baselines[-1]["messages"] != done["messages"]:
            raise RuntimeError(f"send-due enqueued {done['messages']} messages, the baseline "
                               f"{baselines[-1]['messages']}")  # fmt: skip
        log(f"  schedule run {i + 1}/{runs} ({engine.dialect.name}, {due:,} due): "
            + (f"baseline {baselines[-1]['seconds']:.2f} s, " if with_baseline else "")
            + f"send-due {done['seconds']:.2f} s, {done['cpu_s']:.2f} s CPU, "
            f"{done['rss_mb']:.0f} MB, {done['messages']:,} messages ({done['summary']})")  # fmt: skip
    seconds = median([r["seconds"] for r in nurture_runs])
    found: dict[str, Any] = {
        "rows": due,
        "messages": nurture_runs[0]["messages"],
        "seconds": seconds,
        "rows_per_s": due / seconds,
        "rss_mb": median([r["rss_mb"] for r in nurture_runs]),
        "cpu_s": median([r["cpu_s"] for r in nurture_runs]),
        "runs": {"nurture": nurture_runs, "baseline": baselines},
    }
    if with_baseline:
        base_seconds = median([b["seconds"] for b in baselines])
        found.update(baseline_seconds=base_seconds, baseline_rows_per_s=due / base_seconds,
                     ratio=base_seconds / seconds)  # fmt: skip
    return found


def _settle(engine: Engine) -> None:
    """PostgreSQL: write out what the last load or reset left dirty (CHECKPOINT), so
    each measured run starts without the previous one's writes still being flushed."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))


def _flush_queue(redis_url: str) -> None:
    from bench.services import flush_keeping_claim

    flush_keeping_claim(redis_url)


def run(total: int = 1_000_000, due: int = 100_000, runs: int = 3, sqlite_total: int = 100_000,
        sqlite_due: int = 10_000, log: Any = print) -> dict[str, Any]:  # fmt: skip
    from nurture.settings import load_settings
    from nurture.store import engine as db

    result: dict[str, Any] = {}
    with workspace() as ws, redis_database() as redis_url:
        with pg_database() as pg_url:
            env = nurture_env(ws, pg_url, redis_url)
            settings = load_settings(ws, env=env)
            engine = db.get_engine(settings)
            # First a table of 2 x due rows, the first half of them due (people who signed
            # up together fall due together): the peak RSS at that size.
            small = 2 * due
            started = time.perf_counter()
            data.add_readers(engine, 1, due, due_every=1, now=_now(), opened_every=OPENED)
            data.add_readers(engine, due + 1, small, due_every=None, now=_now(),
                             opened_every=OPENED)  # fmt: skip
            first = _table_case(engine, env, redis_url, runs, stop=due, due_every=1, log=log,
                                with_baseline=False)  # fmt: skip
            log(f"  schedule: {small:,} rows: send-due {first['seconds']:.2f} s, "
                f"{first['rss_mb']:.0f} MB")  # fmt: skip
            # Then the rest of the table, none of it due.
            data.add_readers(engine, small + 1, total, due_every=None, now=_now(),
                             opened_every=OPENED)  # fmt: skip
            loaded = time.perf_counter() - started
            log(f"  schedule: loaded {total:,} subscribers, enrolments and deliveries "
                f"(plus {small:,} rows' runs) in {loaded:.0f} s")  # fmt: skip
            plans = explain_claim(settings)
            pg = _table_case(engine, env, redis_url, runs, stop=due, due_every=1, log=log)
            pg.update(table_rows=total, small_table_rows=small, small_table_rss_mb=first["rss_mb"],
                      small_table_seconds=first["seconds"], explain=plans)  # fmt: skip
            result["postgresql"] = pg
        db.dispose_all()
        sqlite_path = Path(ws) / "bench.db"
        env = nurture_env(ws, f"sqlite:///{sqlite_path}", redis_url)
        settings = load_settings(ws, env=env)
        engine = db.get_engine(settings)
        every = sqlite_total // sqlite_due
        data.add_readers(engine, 1, sqlite_total, due_every=every, now=_now(), opened_every=OPENED)
        plans = explain_claim(settings)
        lite = _table_case(
            engine, env, redis_url, runs, stop=sqlite_total, due_every=every, log=log
        )
        lite.update(table_rows=sqlite_total, explain=plans)
        result["sqlite"] = lite
        db.dispose_all()
    return result
