"""Distributed mode on the real servers: PostgreSQL, Redis, `nurture worker` processes,
several `send-due` at once, an aiosmtpd sink. Counts are exact: once means once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from sqlalchemy import func, select

from nurture.cli import cli
from nurture.store.engine import session_scope
from nurture.store.tables import Enrollment
from tests.helpers.distributed import (
    per_recipient,
    seed,
    send_due,
    settings_for,
    statuses,
    wait_for,
)
from tests.services import free_port

# The fixtures: Redis and PostgreSQL of this test's own, `nurture worker` processes.

SUBSCRIBERS = 500
STEPS = 3


def test_three_send_dues_and_two_workers_deliver_every_step_once(dist_env, workers, timed_sink):
    settings = settings_for(dist_env)
    emails = seed(settings, "burst", SUBSCRIBERS)
    started = time.monotonic()
    workers.start(processes=1, threads=4)  # two hosts, one worker process each
    workers.start(processes=1, threads=4)

    # cron on three hosts: each step becomes due once the previous one is sent, so
    # send-due runs until every step went out, three at a time.
    env = {**os.environ, **dist_env}
    runs = 0
    while len(timed_sink.messages) < SUBSCRIBERS * STEPS and time.monotonic() - started < 120:
        procs = [
            subprocess.Popen([sys.executable, "-m", "nurture", "send-due"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]  # fmt: skip
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.startswith("send-due: "), out
        runs += 1
    wait_for(lambda: statuses(settings) == {"sent": SUBSCRIBERS * STEPS}, 30)
    elapsed = time.monotonic() - started

    received = per_recipient(timed_sink)
    assert len(received) == SUBSCRIBERS * STEPS
    assert set(received.values()) == {1}, "a step arrived twice"
    assert {r for r, _ in received} == set(emails)
    assert statuses(settings) == {"sent": SUBSCRIBERS * STEPS}
    with session_scope(settings) as session:
        done = session.execute(select(Enrollment.status, func.count()).group_by(Enrollment.status))
        assert dict(done.all()) == {"completed": SUBSCRIBERS}
    print(f"\n{SUBSCRIBERS * STEPS} emails, 3 send-due x {runs} rounds, 2 workers: "
          f"{elapsed:.1f} s")  # fmt: skip


def test_smtp_concurrency_holds_across_workers(dist_env, workers, timed_sink):
    dist_env["NURTURE_SMTP_CONCURRENCY"] = "2"
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 120)
    timed_sink.handler.delay = 0.05  # slow enough for sends to overlap if they may
    workers.start(threads=4)
    workers.start(threads=4)
    assert send_due(dist_env) == "send-due: 120 due, 120 enqueued"
    assert wait_for(lambda: statuses(settings) == {"sent": 120}, 60), statuses(settings)
    assert timed_sink.handler.peak == 2, "SMTP sessions at once"
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails)
    assert set(received.values()) == {1}


def test_stats_reports_the_broker_and_its_queue(dist_env, runner):
    settings = settings_for(dist_env)
    seed(settings, "single", 120)
    assert send_due(dist_env) == "send-due: 120 due, 120 enqueued"  # no worker yet
    result = runner.invoke(cli, ["stats", "single"], env=dist_env)
    assert ("deliveries: 120 queued, 0 sending, 0 to retry, 0 stuck, 0 taken back unsent, "
            "0 maybe sent twice") in result.output  # fmt: skip
    assert "broker: reachable, 3 messages waiting" in result.output
    down = {**dist_env, "NURTURE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = runner.invoke(cli, ["stats", "single"], env=down)
    assert result.exit_code == 0
    assert "broker: UNREACHABLE" in result.output
