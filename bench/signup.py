"""Signups: `POST /subscribe` of a new address each time, against `GET /healthz` of the
same server.

nurture: the real `nurture serve` (gunicorn, one worker per core, its default threads)
on a fresh PostgreSQL database and a Redis database of its own (NURTURE_REDIS_URL set,
so each confirmation is enqueued, not sent), loaded by wrk on loopback. Every request
posts the form with an address nobody used before (run token, wrk thread, counter and
a random part), so none takes the "already known" path by accident. The rate limiter
stays on, with NURTURE_SUBSCRIBE_LIMIT set beyond what the load can reach: its Redis
round trip is part of every real signup. Afterwards the database must hold one
subscriber and one confirmation per answered request and Redis one queued message each,
and every answer must have been a 200, or the run fails: a benchmark of 429s or 400s
would be worthless.

baseline: `GET /healthz` of the same server under the same wrk settings in the same run:
the same gunicorn, Flask and access log around a database round trip and a look at the
queue (which opens a Redis connection per call, tasks.queue_depth).

Closed loop: latency is about CONNECTIONS / requests per second. CONNECTIONS is the
server's concurrency (workers x threads), one connection per server thread, so the
latency is what a request takes at full load rather than the length of a queue in
front of the workers; pass more to see that queue. CPU per request is read from /proc
for the gunicorn processes, this database's PostgreSQL backends, Redis and wrk, with the
share of the machine other processes used meanwhile (the machine is shared).

    python -m bench.signup [--runs 3] [--seconds 10] [--connections 8]
    python -m bench.signup --profile stacks.txt   # py-spy, collapsed stacks of the workers
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from bench.services import (
    PYTHON,
    child,
    cpu_seconds,
    descendants,
    flush_keeping_claim,
    free_port,
    nurture_env,
    pg_database,
    redis_database,
    wait_for_port,
    workspace,
)
from bench.stats import median
from bench.wrk import WRK_THREADS, check_answers, lua_script, require_wrk, wrk
from nurture.web.server import DEFAULT_THREADS

#: Threads per gunicorn worker: `nurture serve`'s default.
THREADS = DEFAULT_THREADS
#: wrk connections: one per server thread (workers x threads).
CONNECTIONS = (os.cpu_count() or 1) * THREADS
#: Two windows like the default's, far beyond what one client can post in a run, so the
#: limiter counts every signup but never refuses one.
UNREACHABLE_LIMIT = "1000000 per minute; 10000000 per hour"
#: Seconds of load before the first run: workers import, connect and compile templates.
WARMUP_SECONDS = 2
QUEUE = "dramatiq:nurture"
#: Seconds for the requests still in flight when wrk stops to finish before counting.
SETTLE_SECONDS = 1.0


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def workers(self) -> list[int]:
        return descendants(self.proc.pid)


@contextmanager
def serving(env: dict[str, str], workers: int, threads: int) -> Iterator[Server]:
    """`nurture serve` with `workers` gunicorn workers, its errors kept in a file."""
    port = free_port()
    args = [PYTHON, "-m", "nurture", "serve", "--port", str(port), "--workers", str(workers),
            "--threads", str(threads)]  # fmt: skip
    with tempfile.NamedTemporaryFile(prefix="nurture-serve-", suffix=".log") as log, \
            child(args, env, stderr=log) as proc:  # fmt: skip
        try:
            wait_for_port(port)
        except RuntimeError:
            raise RuntimeError(f"nurture serve did not start:\n{_tail(Path(log.name))}") from None
        yield Server(port, proc, Path(log.name))


class Meters:
    """CPU seconds used meanwhile by the gunicorn workers, PostgreSQL and Redis."""

    def __init__(self, server: Server, engine: Engine, redis_url: str) -> None:
        self.server, self.engine = server, engine
        self.redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])

    def read(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            backends = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()  # fmt: skip
        return {
            "gunicorn": sum(cpu_seconds(p) for p in [self.server.proc.pid, *self.server.workers]),
            "gunicorn_system": sum(_system_seconds(p) for p in self.server.workers),
            "postgres": sum(cpu_seconds(p) for p in backends),
            "redis": cpu_seconds(self.redis_pid),
            "machine": _busy_seconds(),
        }


def _system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of a process: sockets, polls, the GIL's futexes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, steal included)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # - idle, iowait


def measured(
    meters: Meters, url: str, script: Path, seconds: int, connections: int
) -> dict[str, Any]:
    """A wrk run with the CPU each process spent on it, in microseconds per request, and
    the share of the machine others used meanwhile (a busy neighbour spoils the run)."""
    before = meters.read()
    result = wrk(url, script, seconds, connections)
    after = meters.read()
    n = max(result["requests"], 1)
    used = {k: after[k] - before[k] for k in before}
    used["wrk"] = result.pop("wrk_cpu_s")
    busy = used.pop("machine")
    ours = used["gunicorn"] + used["postgres"] + used["redis"] + used["wrk"]
    result["others_cpu_pct"] = max(0.0, busy - ours) / (seconds * (os.cpu_count() or 1)) * 100
    result["cpu_us"] = {k: v / n * 1e6 for k, v in used.items()}
    return result


def created(engine: Engine, token: str) -> dict[str, int]:
    """Subscribers and confirmation deliveries of the run with this token."""
    with engine.connect() as conn:
        subscribers, confirmations = conn.execute(text(
            "SELECT count(DISTINCT s.id), count(d.id) FROM subscribers s "
            "LEFT JOIN deliveries d ON d.subscriber_id = s.id AND d.kind = 'confirm' "
            "WHERE s.email LIKE :pattern"), {"pattern": f"b{token}-%"}).one()  # fmt: skip
    return {"subscribers": int(subscribers), "confirmations": int(confirmations)}


def check_created(result: dict[str, Any], stored: dict[str, int], enqueued: int,
                  connections: int) -> None:  # fmt: skip
    """Each answered request made a subscriber, a confirmation and a queue message; those
    in flight when wrk stopped may be stored without being counted by wrk."""
    n = result["requests"]
    for what, count in [*stored.items(), ("queue messages", enqueued)]:
        if not n <= count <= n + connections:
            raise RuntimeError(f"wrk counted {n} signups answered, but there are {count} {what}")


def one_run(server: Server, meters: Meters, engine: Engine, redis_url: str, folder: Path,
            seconds: int, connections: int) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    base = f"http://127.0.0.1:{server.port}"
    flush_keeping_claim(redis_url)
    queue = redis.Redis.from_url(redis_url)
    token = uuid.uuid4().hex[:8]
    signup = measured(meters, f"{base}/subscribe", lua_script(folder, "POST", "/subscribe", token),
                      seconds, connections)  # fmt: skip
    check_answers("POST /subscribe", signup)
    time.sleep(SETTLE_SECONDS)
    signup["stored"] = created(engine, token)
    signup["enqueued"] = int(queue.llen(QUEUE))
    queue.close()
    check_created(signup, signup["stored"], signup["enqueued"], connections)
    health = measured(meters, f"{base}/healthz", lua_script(folder, "GET", "/healthz", token),
                      seconds, connections)  # fmt: skip
    check_answers("GET /healthz", health)
    for r in (signup, health):
        r.pop("output")
    return signup, health


def warm_up(server: Server, folder: Path, connections: int) -> None:
    base = f"http://127.0.0.1:{server.port}"
    for method, path in (("GET", "/healthz"), ("POST", "/subscribe")):
        script = lua_script(folder, method, path, "warm" + uuid.uuid4().hex[:4])
        check_answers(
            f"warm-up {method} {path}", wrk(base + path, script, WARMUP_SECONDS, connections)
        )
    time.sleep(SETTLE_SECONDS)  # requests still in flight when wrk stopped


def run(runs: int = 3, seconds: int = 10, connections: int = CONNECTIONS,
        log: Callable[..., Any] = print, threads: int = THREADS) -> dict[str, Any]:  # fmt: skip
    require_wrk()
    workers = os.cpu_count() or 1
    with workspace() as ws, pg_database() as pg_url, redis_database() as redis_url, \
            tempfile.TemporaryDirectory(prefix="nurture-wrk-") as tmp:  # fmt: skip
        env = nurture_env(ws, pg_url, redis_url, NURTURE_SUBSCRIBE_LIMIT=UNREACHABLE_LIMIT)
        engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
        folder = Path(tmp)
        signups, healths = [], []
        try:
            with serving(env, workers, threads) as server:
                meters = Meters(server, engine, redis_url)
                try:
                    warm_up(server, folder, connections)
                    for i in range(runs):
                        signup, health = one_run(server, meters, engine, redis_url, folder,
                                                 seconds, connections)  # fmt: skip
                        signups.append(signup)
                        healths.append(health)
                        log(f"  signup run {i + 1}/{runs}: POST /subscribe {signup['rps']:,.0f}/s "
                            f"p99 {signup['p99_ms']:.1f} ms; GET /healthz {health['rps']:,.0f}/s "
                            f"p99 {health['p99_ms']:.1f} ms; others used "
                            f"{signup['others_cpu_pct']:.0f}%/{health['others_cpu_pct']:.0f}% "
                            "of the machine meanwhile")  # fmt: skip
                except RuntimeError as e:
                    raise RuntimeError(f"{e}\nserver log:\n{_tail(server.log)}") from None
        finally:
            engine.dispose()
    return summary(signups, healths, seconds, connections, workers, threads)


def profile(out: Path, seconds: int = 10, connections: int = CONNECTIONS,
            method: str = "POST", path: str = "/subscribe") -> dict[str, Any]:  # fmt: skip
    """One wrk run with py-spy sampling every gunicorn worker; writes collapsed stacks to
    `out` (flamegraph.pl or speedscope read them) and returns the wrk result."""
    spy = Path(PYTHON).with_name("py-spy")
    with workspace() as ws, pg_database() as pg_url, redis_database() as redis_url, \
            tempfile.TemporaryDirectory(prefix="nurture-wrk-") as tmp:  # fmt: skip
        env = nurture_env(ws, pg_url, redis_url, NURTURE_SUBSCRIBE_LIMIT=UNREACHABLE_LIMIT)
        with serving(env, os.cpu_count() or 1, THREADS) as server:
            warm_up(server, Path(tmp), connections)
            script = lua_script(Path(tmp), method, path, uuid.uuid4().hex[:8])
            record = [str(spy), "record", "--subprocesses", "--gil", "--format", "raw", "--nonblocking",
                      "-o", str(out), "-d", str(seconds + 1), "-p", str(server.proc.pid)]  # fmt: skip
            with subprocess.Popen(
                record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            ) as spying:
                time.sleep(1)
                result = wrk(f"http://127.0.0.1:{server.port}{path}", script, seconds, connections)
                spying.wait(60)
    result.pop("output")
    return result


def summary(signups: list[dict[str, Any]], healths: list[dict[str, Any]], seconds: int,
            connections: int, workers: int, threads: int) -> dict[str, Any]:  # fmt: skip
    rps, base = median([r["rps"] for r in signups]), median([r["rps"] for r in healths])
    return {
        "wrk": f"wrk -t{WRK_THREADS} -c{connections} -d{seconds}s --latency (closed loop)",
        "load": f"loopback, wrk -c{connections} against {workers} workers x {threads} threads",
        "server": f"nurture serve: {workers} gunicorn workers x {threads} threads (gthread)",
        "body": "form-encoded, a new address each request",
        "rps": rps,
        "p99_ms": median([r["p99_ms"] for r in signups]),
        "p50_ms": median([r["latency_ms"][50] for r in signups]),
        "p90_ms": median([r["latency_ms"][90] for r in signups]),
        "baseline_rps": base,
        "baseline_p99_ms": median([r["p99_ms"] for r in healths]),
        "baseline_p50_ms": median([r["latency_ms"][50] for r in healths]),
        "ratio": rps / base if base else 0.0,
        "cpu_us_per_signup": _median_of(signups, "cpu_us"),
        "cpu_us_per_healthz": _median_of(healths, "cpu_us"),
        "others_cpu_pct": median([r["others_cpu_pct"] for r in signups + healths]),
        "runs": {"signup": signups, "healthz": healths},
    }


def _median_of(results: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {k: median([r[key][k] for r in results]) for k in results[0][key]}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.signup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--threads", type=int, default=THREADS, help="per gunicorn worker")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="one run under py-spy instead; collapsed stacks to FILE")  # fmt: skip
    args = parser.parse_args()
    if args.profile:
        print(profile(args.profile, args.seconds, args.connections))
        return
    out = run(args.runs, args.seconds, args.connections, threads=args.threads)
    out.pop("runs")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
