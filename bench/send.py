"""Send path: N due deliveries end to end, against the raw smtplib rate of the same sink.

nurture: N deliveries queued in PostgreSQL, their ids enqueued on Redis in messages of
`tasks.CHUNK`, sent by Dramatiq workers (`bench.worker`, i.e. `nurture worker` with
stage counters) into a counting aiosmtpd sink in a process of its own. The clock runs
from the first enqueue until the database says every delivery is sent.

baseline: the same sink fed messages nurture built, already as bytes, over as many
persistent smtplib connections as nurture may hold (NURTURE_SMTP_CONCURRENCY): the
most this machine's loopback, sink and smtplib allow.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import data
from bench.services import (
    PYTHON,
    child,
    cpu_seconds,
    flush_keeping_claim,
    free_port,
    nurture_env,
    pg_database,
    redis_database,
    workspace,
)
from bench.stats import median

STAGES = ("render", "build", "smtp", "database", "queue")


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    port: int

    def count(self) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[0])


@contextmanager
def sink_process() -> Any:
    port = free_port()
    with child([PYTHON, "-m", "bench.sink", str(port)], stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        yield Sink(proc, port)


def smtplib_baseline(
    port: int, messages: list[bytes], n: int, connections: int
) -> dict[str, float]:
    """n pre-built messages over `connections` persistent connections, one thread each."""
    barrier = threading.Barrier(connections + 1)
    errors: list[BaseException] = []

    def send(share: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as conn:
                barrier.wait()
                for i in range(share):
                    conn.sendmail("hello@crumb.example", [f"reader{i}@example.com"],
                                  messages[i % len(messages)])  # fmt: skip
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=send, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    barrier.wait()
    cpu, started = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"baseline sender failed: {errors[0]!r}")
    return {"per_s": n / elapsed, "seconds": elapsed,
            "client_cpu_us": (time.process_time() - cpu) / n * 1e6}  # fmt: skip


def prebuilt_messages(settings: Any, count: int) -> list[bytes]:
    """Messages exactly as nurture sends them (tracked links, CSS inlined), as bytes."""
    from nurture.content.rendering import SubscriberView
    from nurture.content.sequences import catalog_for
    from nurture.delivery.compose import compose_step

    seq = catalog_for(settings.sequences_dir).sequences[data.SEQUENCE]
    built = []
    for i in range(count):
        step = seq.step(data.STEPS[i % len(data.STEPS)])
        assert step is not None
        view = SubscriberView(email=f"reader{i}@example.com", first_name=data.NAMES[i % 10])
        built.append(compose_step(settings, seq, step, view, i + 1, i + 1).envelope.data)
    return built


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    probes: Path
    processes: int
    reports: list[dict[str, Any]] = field(default_factory=list)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(list(self.probes.glob("*.ready"))) < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Dramatiq workers did not start (see bench.worker)")
            time.sleep(0.1)


def nurture_run(
    settings: Any, env: dict[str, str], n: int, processes: int, threads: int
) -> dict[str, Any]:
    from nurture import queue as tasks
    from nurture.store import engine as db

    engine = db.get_engine(settings)
    ids = data.queue_steps(engine, n)
    flush_keeping_claim(settings.redis_url)
    with tempfile.TemporaryDirectory(prefix="nurture-probe-") as folder:
        probe_env = {**env, "NURTURE_BENCH_PROBE_DIR": folder}
        args = [PYTHON, "-m", "bench.worker", str(processes), str(threads)]
        with child(args, probe_env) as proc:
            workers = Workers(proc, Path(folder), processes)
            workers.wait_ready()
            started = time.perf_counter()
            tasks.dispatch(settings, ids)
            done, other = _wait_settled(engine, n, timeout=max(120.0, n / 25))
            elapsed = time.perf_counter() - started
            pg_cpu = _postgres_cpu(engine)
        reports = [json.loads(p.read_text()) for p in Path(folder).glob("*.json")]
    if len(reports) < processes:
        raise RuntimeError("a worker process stopped without its report")
    return _summary(n, done, other, elapsed, reports, pg_cpu)


def _wait_settled(engine: Any, n: int, timeout: float) -> tuple[int, dict[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            counts = dict(conn.execute(text(  # type: ignore[arg-type]
                "SELECT status, count(*) FROM deliveries GROUP BY status")).all())  # fmt: skip
        settled = sum(counts.get(s, 0) for s in ("sent", "failed", "skipped"))
        if settled >= n or time.monotonic() > deadline:
            return counts.get("sent", 0), {k: v for k, v in counts.items() if k != "sent"}
        time.sleep(0.1)


def _postgres_cpu(engine: Any) -> float:
    """CPU seconds of this database's server backends (the workers' pooled connections)."""
    with engine.connect() as conn:
        pids = conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).scalars().all()  # fmt: skip
    return sum(cpu_seconds(pid) for pid in pids)


def _summary(n: int, sent: int, other: dict[str, int], elapsed: float,
             reports: list[dict[str, Any]], pg_cpu: float) -> dict[str, Any]:  # fmt: skip
    total: dict[str, float] = {}
    for r in reports:
        for k, v in r["stages"].items():
            total[k] = total.get(k, 0.0) + v
    cpu = sum(r["cpu"] for r in reports)
    compose, batch, smtp = (
        total.get("compose", 0.0),
        total.get("batch", 0.0),
        total.get("smtp", 0.0),
    )
    build = total.get("build", 0.0)
    stages = {
        "render": compose - build,
        "build": build,
        "smtp": smtp,
        "database": batch - compose - smtp,
        "queue": cpu - batch,
    }
    return {
        "emails_per_s": sent / elapsed,
        "seconds": elapsed,
        "sent": sent,
        "not_sent": other,
        "cpu_us": {k: v / max(sent, 1) * 1e6 for k, v in stages.items()},
        "worker_cpu_us": cpu / max(sent, 1) * 1e6,
        "postgres_cpu_us": pg_cpu / max(sent, 1) * 1e6,
        "rss_mb": max(r["peak_rss_kb"] for r in reports) / 1024,
    }


def run(n: int = 20_000, runs: int = 3, processes: int = 2, threads: int = 2,
        connections: int = 4, log: Any = print) -> dict[str, Any]:  # fmt: skip
    from nurture.settings import load_settings

    with workspace() as ws, pg_database() as pg_url, redis_database() as redis_url, \
            sink_process() as sink:  # fmt: skip
        env = nurture_env(ws, pg_url, redis_url, NURTURE_SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
                          NURTURE_SMTP_CONCURRENCY=str(connections))  # fmt: skip
        settings = load_settings(ws, env=env)
        from nurture.store import engine as db

        data.add_readers(db.get_engine(settings), 1, n, due_every=1, now=_now())
        messages = prebuilt_messages(settings, 200)
        baselines, results = [], []
        for i in range(runs):
            before = sink.count()
            baselines.append(smtplib_baseline(sink.port, messages, n, connections))
            assert sink.count() - before == n, "the sink lost messages"
            log(f"  send run {i + 1}/{runs}: baseline {baselines[-1]['per_s']:,.0f}/s", end="")
            results.append(nurture_run(settings, env, n, processes, threads))
            log(f", nurture {results[-1]['emails_per_s']:,.0f}/s "
                f"({results[-1]['seconds']:.1f} s, {results[-1]['rss_mb']:.0f} MB)")  # fmt: skip
    emails = median([r["emails_per_s"] for r in results])
    base = median([b["per_s"] for b in baselines])
    return {
        "n": n,
        "workers": f"{processes} processes x {threads} threads",
        "smtp_connections": connections,
        "message_bytes": round(sum(map(len, messages)) / len(messages)),
        "emails_per_s": emails,
        "baseline_per_s": base,
        "ratio": emails / base,
        "rss_mb": median([r["rss_mb"] for r in results]),
        "cpu_us_per_email": {s: median([r["cpu_us"][s] for r in results]) for s in STAGES},
        "worker_cpu_us_per_email": median([r["worker_cpu_us"] for r in results]),
        "postgres_cpu_us_per_email": median([r["postgres_cpu_us"] for r in results]),
        "baseline_client_cpu_us_per_email": median([b["client_cpu_us"] for b in baselines]),
        "runs": {"nurture": results, "baseline": baselines},
    }


def _now() -> Any:
    from nurture import clock

    return clock.now()
