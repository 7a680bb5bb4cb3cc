"""`nurture worker`: clear errors before it starts, and a clean stop on SIGTERM."""

from __future__ import annotations

import re
import time

from nurture.cli import cli
from tests.services import free_port
from tests.test_distributed_fixtures import (
    per_recipient,
    queue_depth_of,
    seed,
    send_due,
    settings_for,
    statuses,
    wait_for,
)

pytest_plugins = ["tests.test_distributed_fixtures"]


def test_worker_without_redis_says_what_to_set(runner, workspace):
    result = runner.invoke(cli, ["worker"], env={"NURTURE_WORKSPACE": str(workspace),
                                                 "NURTURE_REDIS_URL": ""})  # fmt: skip
    assert result.exit_code == 1
    assert "Error: NURTURE_REDIS_URL is not set: `nurture worker` needs Redis" in result.output
    assert "Traceback" not in result.output


def test_worker_with_unreachable_redis_says_so(runner, workspace):
    env = {"NURTURE_WORKSPACE": str(workspace),
           "NURTURE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # fmt: skip
    result = runner.invoke(cli, ["worker"], env=env)
    assert result.exit_code == 1
    assert "Error: cannot reach NURTURE_REDIS_URL" in result.output


def test_sigterm_stops_cleanly_and_hands_the_rest_back(dist_env, workers, timed_sink):
    """Each thread finishes the email it is sending and gives the rest of its message back
    to the queue: nothing is left `sending`, and the next worker sends the rest, once."""
    dist_env["NURTURE_SEND_RATE"] = "10"
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 100)
    worker = workers.start(threads=4)
    assert send_due(dist_env) == "send-due: 100 due, 100 enqueued"
    assert wait_for(lambda: len(timed_sink.messages) >= 5, 30)

    asked = time.monotonic()
    assert workers.stop(worker) == 0
    stopped_in = time.monotonic() - asked
    sent_before = len(timed_sink.messages)
    left = statuses(settings)
    assert "sending" not in left, left
    assert left["queued"] == 100 - sent_before
    assert queue_depth_of(dist_env) >= 1  # the rest, handed back
    print(f"\nSIGTERM: stopped in {stopped_in:.1f} s after {sent_before} sends")
    assert stopped_in < 10

    workers.start(threads=4)  # no send-due needed: the messages are in the queue
    assert wait_for(lambda: statuses(settings) == {"sent": 100}, 60), statuses(settings)
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails)
    assert set(received.values()) == {1}


def test_worker_logs_each_group_it_sent_and_no_alembic_chatter(dist_env, workers, timed_sink):
    settings = settings_for(dist_env)
    seed(settings, "single", 3)
    worker = workers.start(threads=2)
    assert send_due(dist_env) == "send-due: 3 due, 3 enqueued"
    assert wait_for(lambda: statuses(settings) == {"sent": 3}, 60), statuses(settings)

    def sent_logged() -> int:
        lines = [x for x in workers.log(worker).splitlines() if "nurture.sending" in x]
        return sum(int(n) for x in lines for n in re.findall(r"(\d+) sent", x))

    assert wait_for(lambda: sent_logged() == 3, 30), workers.log(worker)
    log = workers.log(worker)
    assert re.search(r"\[nurture\.sending\] \[INFO\] \d+ deliveries: \d+ sent, 0 failed", log), log
    assert "alembic" not in log.lower(), log
