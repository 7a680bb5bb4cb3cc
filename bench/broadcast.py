"""Broadcast: one newsletter issue to every reader, against raw smtplib on the same sink.

embedded: the default, SQLite and no broker. What `nurture broadcast send ISSUE --at now`
does after loading the issue, in this process: the fan-out writes the deliveries 500 at
a time and sends each batch here and now (claim, re-check, render, MIME, SMTP, record),
from as many threads as NURTURE_SMTP_CONCURRENCY (4) allows. Baseline: raw smtplib over
one persistent connection, the most one process sending in turn could do.

distributed: PostgreSQL and Redis. The same fan-out enqueues the deliveries, and
`nurture worker` (2 processes x 2 threads, as the send benchmark runs it) sends them.
Baseline: raw smtplib over NURTURE_SMTP_CONCURRENCY connections, as for the send path.

The issue is the example workspace's newsletter (Markdown, a table, tracked links,
CSS inlined), to 5,000 readers (the median of --runs runs) and 50,000 (one run). The
clock runs from the start of the fan-out until every email is recorded sent; the
baseline sends messages nurture built for the same issue, as bytes, to the same sink.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import data
from bench.send import Workers, sink_process, smtplib_baseline
from bench.services import (
    PYTHON,
    ROOT,
    child,
    flush_keeping_claim,
    nurture_env,
    pg_database,
    redis_database,
    workspace,
)
from bench.stats import median

ISSUE = "newsletters/2026-12-monthly.md"
SIZES = (5_000, 50_000)
#: Same-run ratios to reach: embedded against one connection, distributed against as
#: many connections as the workers may hold (the send path's target).
TARGETS = {"embedded": 0.5, "distributed": 0.6}
CONNECTIONS = 4


def prebuilt(settings: Any, count: int) -> list[bytes]:
    """The issue as nurture sends it (tracked links, pixel, CSS inlined), as bytes."""
    from nurture.broadcast.operations import load_checked
    from nurture.content.rendering import SubscriberView
    from nurture.delivery.issues import compose_issue

    issue = load_checked(settings, ISSUE, send_at="now", local_time=False)
    web = f"{settings.base_url}/archive/{issue.slug}"
    return [
        compose_issue(settings, issue, SubscriberView(email=f"reader{i}@example.com",
                      first_name=data.NAMES[i % 10], link_key=f"key{i}"), i, web,
                      delivery_id=i + 1).envelope.data
        for i in range(count)
    ]  # fmt: skip


def _reset(engine: Any, n: int) -> None:
    """No broadcast and none of its deliveries, and readers 1..n the only active
    subscribers: the next run starts the same, with an audience of n."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM deliveries WHERE broadcast_id IS NOT NULL"))
        conn.execute(text("DELETE FROM broadcasts"))
        conn.execute(text("UPDATE subscribers SET status = CASE WHEN id <= :n THEN 'active' "
                          "ELSE 'unsubscribed' END"), {"n": n})  # fmt: skip
    data.analyze(engine)


def _schedule(settings: Any) -> int:
    from nurture.broadcast import operations

    issue = operations.load_checked(settings, ISSUE, send_at="now", local_time=False)
    return operations.schedule(settings, issue).broadcast_id


def _sent(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM deliveries WHERE broadcast_id IS NOT NULL AND status = 'sent'"
        )).scalar_one())  # fmt: skip


def embedded_run(settings: Any, n: int) -> dict[str, Any]:
    from nurture import queue
    from nurture.broadcast import fanout
    from nurture.store.engine import get_engine

    engine = get_engine(settings)
    _reset(engine, n)
    broadcast_id = _schedule(settings)
    cpu, started = time.process_time(), time.perf_counter()
    counts = fanout.fan_out_due_broadcasts(settings, queue.dispatch, broadcast_id)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = _sent(engine)
    if sent != n or counts["sent"] != n:
        raise RuntimeError(f"embedded broadcast sent {sent} of {n}: {dict(counts)}")
    return {"emails_per_s": n / elapsed, "seconds": elapsed, "cpu_us": cpu / n * 1e6}


def distributed_run(settings: Any, env: dict[str, str], n: int) -> dict[str, Any]:
    from nurture import queue
    from nurture.broadcast import fanout
    from nurture.store.engine import get_engine

    engine = get_engine(settings)
    _reset(engine, n)
    flush_keeping_claim(settings.redis_url)
    with tempfile.TemporaryDirectory(prefix="nurture-probe-") as folder:
        args = [PYTHON, "-m", "bench.worker", "2", "2"]
        with child(args, {**env, "NURTURE_BENCH_PROBE_DIR": folder}) as proc:
            Workers(proc, Path(folder), 2).wait_ready()
            broadcast_id = _schedule(settings)
            started = time.perf_counter()
            fanout.fan_out_due_broadcasts(settings, queue.dispatch, broadcast_id)
            deadline = time.monotonic() + max(120.0, n / 25)
            while (sent := _sent(engine)) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
    if sent != n:
        raise RuntimeError(f"distributed broadcast sent {sent} of {n} before the deadline")
    return {"emails_per_s": n / elapsed, "seconds": elapsed}


def _measure(mode: str, sizes: tuple[int, ...], runs: int, port: int, messages: list[bytes],
             send: Any, log: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Each size: `runs` pairs (baseline, then nurture) for the first, one for the others."""
    connections = 1 if mode == "embedded" else CONNECTIONS
    rows = []
    for k, n in enumerate(sizes):
        baselines, results = [], []
        for i in range(runs if k == 0 else 1):
            baselines.append(smtplib_baseline(port, messages, n, connections))
            log(f"  {mode} {n:,} run {i + 1}: baseline {baselines[-1]['per_s']:,.0f}/s", end="")
            results.append(send(n))
            log(f", nurture {results[-1]['emails_per_s']:,.0f}/s")
        rate, base = (
            median([r["emails_per_s"] for r in results]),
            median([b["per_s"] for b in baselines]),
        )
        rows.append({"mode": mode, "readers": n, "runs": len(results), "emails_per_s": rate,
                     "baseline_per_s": base, "ratio": rate / base, "connections": connections,
                     "target": TARGETS[mode], "met": rate / base >= TARGETS[mode],
                     "cpu_us_per_email": median([r.get("cpu_us", 0.0) for r in results]),
                     "all": {"nurture": results, "baseline": baselines}})  # fmt: skip
    return rows


def run(runs: int = 3, log: Any = print, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    from nurture.settings import load_settings
    from nurture.store import engine as db

    rows: list[dict[str, Any]] = []
    with workspace() as ws, sink_process() as sink:
        shutil.copytree(ROOT / "newsletters", ws / "newsletters")
        smtp = {"NURTURE_SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
                "NURTURE_SMTP_CONCURRENCY": str(CONNECTIONS)}  # fmt: skip
        # embedded: SQLite in the workspace, no Redis
        env = nurture_env(ws, f"sqlite:///{ws / 'nurture.db'}", None, **smtp)
        settings = load_settings(ws, env=env)
        db.upgrade(db.get_engine(settings))
        data.add_readers(db.get_engine(settings), 1, max(sizes), due_every=None, now=_now())
        messages = prebuilt(settings, 100)
        rows += _measure("embedded", sizes, runs, sink.port, messages,
                         lambda n: embedded_run(settings, n), log)  # fmt: skip
        db.dispose_all()
        with pg_database() as pg_url, redis_database() as redis_url:
            env = nurture_env(ws, pg_url, redis_url, **smtp)
            settings = load_settings(ws, env=env)
            data.add_readers(db.get_engine(settings), 1, max(sizes), due_every=None, now=_now())
            rows += _measure("distributed", sizes, runs, sink.port, messages,
                             lambda n: distributed_run(settings, env, n), log)  # fmt: skip
    return {"message_bytes": round(sum(map(len, messages)) / len(messages)), "rows": rows}


def _now() -> Any:
    from nurture import clock

    return clock.now()
