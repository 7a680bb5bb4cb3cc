"""Several `send-due` processes at once never send a step twice."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from sqlalchemy import func, select

from nurture import clock
from nurture.content.sequences import catalog_for
from nurture.people.subscribers import add
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery

SUBSCRIBERS = 1000


def test_three_send_due_processes_send_each_step_exactly_once(settings, env, sink):
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        for i in range(SUBSCRIBERS):
            add(session, catalog, f"reader{i}@example.com", clock.now(), confirmed=True)

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nurture", "send-due"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.startswith("send-due: ")

    per_recipient = Counter(r for m in sink.messages for r in m.recipients)
    assert len(per_recipient) == SUBSCRIBERS
    assert set(per_recipient.values()) == {1}, "someone got the welcome twice"
    subjects = {m.message["Subject"] for m in sink.messages}
    assert subjects == {"Welcome, friend: marketing and sales are two jobs"}
    with session_scope(settings) as session:
        statuses = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    assert statuses == {"sent": SUBSCRIBERS}
    claimed = [int(out.split()[1]) for out, _ in outputs]
    assert sum(claimed) == SUBSCRIBERS
    print(f"claimed per process: {claimed}")
