"""What the distributed tests share: a Redis database of their own, PostgreSQL, real
`nurture worker` processes, a sink that timestamps (and can slow down) what it receives,
and fast seeding of due subscribers. No tests here; the test modules import the fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from nurture import clock
from nurture.settings import Settings, load_settings
from nurture.store import engine as db
from nurture.store.engine import session_scope
from nurture.store.tables import Base, Delivery, Enrollment, Subscriber
from tests.services import (
    REDIS_URL,
    Sink,
    SinkHandler,
    own_redis_database,
    unavailable,
)

#: A manual sequence of three steps due at once: each subscriber gets three emails in a row.
BURST = """\
name: burst
trigger: manual
from: "Crumb & Co <hello@crumb.example>"
steps:
  - {id: one, after: 0m, stage: education, subject: "One", template: curious-to-customer/welcome}
  - {id: two, after: 0m, stage: education, subject: "Two", template: curious-to-customer/audience}
  - {id: three, after: 0m, stage: sales, subject: "Three", template: curious-to-customer/measure}
"""
#: One step: one email per subscriber.
SINGLE = """\
name: single
trigger: manual
from: "Crumb & Co <hello@crumb.example>"
steps:
  - {id: hello, after: 0m, stage: education, subject: "Hello", template: curious-to-customer/welcome}
"""
#: One short email: for measuring the rate limiter rather than the template engine.
SHORT = """\
name: short
trigger: manual
from: "Crumb & Co <hello@crumb.example>"
steps:
  - {id: note, after: 0m, stage: education, subject: "A note", template: test/note}
"""


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database (1-15) of this test's own, flushed afterwards."""
    import redis

    taken = contextlib.ExitStack()
    try:
        url = taken.enter_context(own_redis_database(REDIS_URL))
    except redis.RedisError as e:
        unavailable("Redis", e)
    except LookupError as e:
        pytest.fail(f"{e} for this test run")
    with taken:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    engine = db.engine_for(pg_database)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    return pg_database


@dataclass
class TimedHandler(SinkHandler):
    """A sink handler that notes when each message arrived (`arrivals` on the monotonic
    clock, `wall` on the clock the rate limiter's buckets follow), can take `delay`
    seconds to answer DATA or hold every answer while `paused` is set (the message is
    kept first, as a real server may, so a sender killed meanwhile never hears the 250),
    records the most DATA exchanges at once, and can refuse our sender (`refuse_sender`)
    or every message's content (`refuse_data`)."""

    delay: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    paused: threading.Event = field(default_factory=threading.Event)
    #: Senders waiting for their answer while paused.
    waiting: int = 0
    active: int = 0
    peak: int = 0
    refuse_sender: tuple[int, str] | None = None
    refuse_data: tuple[int, str] | None = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if self.refuse_sender:
            return f"{self.refuse_sender[0]} {self.refuse_sender[1]}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse_data:
            return f"{self.refuse_data[0]} {self.refuse_data[1]}"
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            answer = await super().handle_DATA(server, session, envelope)
            self.arrivals.append(time.monotonic())
            self.wall.append(time.time())
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.paused.is_set():
                self.waiting += 1
                while self.paused.is_set():
                    await asyncio.sleep(0.02)
                self.waiting -= 1
            return answer
        finally:
            self.active -= 1


@pytest.fixture
def timed_sink() -> Iterator[Sink]:
    sink = Sink()
    sink.handler = TimedHandler()
    sink.controller.handler = sink.handler
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def dist_env(workspace: Path, pg_url: str, redis_url: str, timed_sink: Sink) -> dict[str, str]:
    """A workspace with the `burst`, `single` and `short` sequences, on PostgreSQL and Redis."""
    (workspace / "sequences" / "burst.yaml").write_text(BURST)
    (workspace / "sequences" / "single.yaml").write_text(SINGLE)
    (workspace / "sequences" / "short.yaml").write_text(SHORT)
    notes = workspace / "templates" / "email" / "test"
    notes.mkdir()
    (notes / "note.html").write_text("<p>A short note for {{ subscriber.email }}.</p>\n")
    (notes / "note.txt").write_text("A short note for {{ subscriber.email }}.\n")
    return {
        "NURTURE_WORKSPACE": str(workspace),
        "NURTURE_DATABASE_URL": pg_url,
        "NURTURE_REDIS_URL": redis_url,
        "NURTURE_SMTP_URL": timed_sink.url,
        "NURTURE_BASE_URL": "https://crumb.example",
        "NURTURE_MAX_PER_DAY": "100",
    }


def settings_for(env: dict[str, str]) -> Settings:
    return load_settings(env["NURTURE_WORKSPACE"], env=env)


def seed(settings: Settings, sequence: str, count: int, prefix: str = "reader") -> list[str]:
    """`count` active subscribers enrolled in `sequence`, its first step due now."""
    from nurture.content.sequences import catalog_for

    first = catalog_for(settings.sequences_dir).sequences[sequence].steps[0].id
    now = clock.now()
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    with session_scope(settings) as session:
        ids = session.scalars(
            insert(Subscriber).returning(Subscriber.id, sort_by_parameter_order=True),
            [{"email": e, "status": "active", "source": "test", "attributes": {},
              "created_at": now, "confirmed_at": now} for e in emails],
        ).all()  # fmt: skip
        session.execute(
            insert(Enrollment),
            [{"subscriber_id": i, "sequence": sequence, "status": "active", "next_step_id": first,
              "next_due_at": now, "enrolled_at": now} for i in ids],
        )  # fmt: skip
    return emails


def statuses(settings: Settings) -> dict[str, int]:
    with session_scope(settings) as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status: n for status, n in rows}


def per_recipient(sink: Sink) -> Counter[tuple[str, str]]:
    """How often each (recipient, subject) arrived."""
    return Counter((m.recipients[0], m.message["Subject"]) for m in list(sink.messages))


def wait_for(what: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(every)
    return what()


def nurture(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a `nurture` command as its own process, as cron would."""
    return subprocess.run(
        [sys.executable, "-m", "nurture", *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


class Workers:
    """`nurture worker` processes, each in its own process group, always stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen] = []

    def start(self, processes: int = 1, threads: int = 4, **extra_env: str) -> subprocess.Popen:
        log = self.logs / f"worker-{len(self.procs)}.log"
        args = [sys.executable, "-m", "nurture", "worker", "-p", str(processes), "-t", str(threads)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, env={**os.environ, **self.env, **extra_env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        ready = wait_for(lambda: self.log(proc).count("ready for action") >= processes, 30)
        assert ready, f"worker did not start:\n{self.log(proc)}"
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return proc.log.read_text(errors="replace")  # type: ignore[attr-defined]

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the whole worker, main and forked processes alike, as a host crash would."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> int:
        """SIGTERM to the main process only, as systemd or Kubernetes would send it."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            # the forked processes go with the main one; make sure of it either way
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def workers(dist_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(dist_env, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def send_due(env: dict[str, str]) -> str:
    """One `nurture send-due` in this process (faster than a new one; same code path)."""
    from click.testing import CliRunner

    from nurture.cli import cli

    result = CliRunner().invoke(cli, ["send-due"], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def queue_depth_of(env: dict[str, str]) -> int | None:
    from nurture.queue import queue_depth

    return queue_depth(settings_for(env))
