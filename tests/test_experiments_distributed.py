"""An experiment's assignment on the real servers: two `send-due` hosts at once, two
`nurture worker` processes on PostgreSQL and Redis, and `simulate` all agree on each
subscriber's variant."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.distributed import seed, settings_for, statuses, wait_for
from tests.helpers.experiments import AB, HEADINGS, received_variants, simulated_variant

READERS = 100  # per worker


def send_due_on_two_hosts(dist_env: dict[str, str]) -> None:
    env = {**os.environ, **dist_env}
    hosts = [subprocess.Popen([sys.executable, "-m", "nurture", "send-due"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    for host in hosts:
        _, err = host.communicate(timeout=120)
        assert host.returncode == 0, err


def test_assignment_is_the_same_across_two_workers_and_a_simulate(dist_env, workers,
                                                                  timed_sink, runner):  # fmt: skip
    (Path(dist_env["NURTURE_WORKSPACE"]) / "sequences" / "ab.yaml").write_text(AB)
    settings = settings_for(dist_env)
    emails: list[str] = []
    for n, prefix in enumerate(("first", "second")):  # one worker host, then another
        emails += seed(settings, "ab", READERS, prefix=prefix)
        worker = workers.start(processes=1, threads=4)
        send_due_on_two_hosts(dist_env)
        sent = {"sent": READERS * (n + 1)}
        assert wait_for(lambda: statuses(settings) == sent, 60), statuses(settings)  # noqa: B023
        assert workers.stop(worker) == 0
        assert re.search(r"deliveries: [1-9]\d* sent", workers.log(worker)), "this worker sent"

    got = received_variants(timed_sink)
    assert sorted(got) == sorted(emails) and len(timed_sink.messages) == 2 * READERS
    for prefix in ("first", "second"):  # each worker sent both variants
        assert {v for e, v in got.items() if e.startswith(prefix)} == {"A", "B"}
    for received in timed_sink.messages:  # the worker rendered the variant decided
        html = received.message.get_body(("html",)).get_content()
        assert HEADINGS[got[received.recipients[0]]] in html
    sample = [e for e in emails if got[e] == "A"][::20] + [e for e in emails if got[e] == "B"][::20]
    assert {e[:5] for e in sample} == {"first", "secon"} and len(sample) >= 8
    for email in sample:
        assert simulated_variant(runner, dist_env, "ab", "hello", email) == got[email], email
