"""`nurture worker`: clear errors before it starts, and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from nurture.cli import cli
from tests.helpers.distributed import (
    per_recipient,
    queue_depth_of,
    seed,
    send_due,
    settings_for,
    statuses,
    wait_for,
)
from tests.services import free_port


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
        lines = [x for x in workers.log(worker).splitlines() if "nurture.queue" in x]
        return sum(int(n) for x in lines for n in re.findall(r"(\d+) sent", x))

    assert wait_for(lambda: sent_logged() == 3, 90), workers.log(worker)
    log = workers.log(worker)
    assert re.search(r"\[nurture\.queue\] \[INFO\] \d+ deliveries: \d+ sent, 0 failed", log), log
    assert "alembic" not in log.lower(), log


def test_worker_takes_its_settings_from_an_env_file_alone(dist_env, timed_sink, tmp_path):
    """Started with nothing but PATH and HOME, as a bare service manager would: the env
    file reaches Dramatiq's worker processes too."""
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 2)
    env_file = tmp_path / "nurture.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in dist_env.items()
                                if k != "NURTURE_WORKSPACE"))  # fmt: skip
    script = Path(sys.executable).parent / "nurture"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path}", str(script),
             "--workspace", dist_env["NURTURE_WORKSPACE"], "--env-file", str(env_file),
             "worker", "--threads", "2"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        assert wait_for(lambda: "ready for action" in log.read_text(), 30), log.read_text()
        assert send_due(dist_env) == "send-due: 2 due, 2 enqueued"
        assert wait_for(lambda: statuses(settings) == {"sent": 2}, 60), log.read_text()
        assert {r for r, _ in per_recipient(timed_sink)} == set(emails)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
