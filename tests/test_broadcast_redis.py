"""A broadcast to a segment of 5,000 subscribers on PostgreSQL with Redis workers, with its fan-out
and a worker killed halfway (SIGKILL): after resuming, the SMTP server has each active,
in-segment subscriber exactly once, and nobody else."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nurture.delivery.sending import GROUP
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast, Delivery
from tests.helpers.broadcast import ISSUE, add_people
from tests.helpers.distributed import Workers, send_due, wait_for
from tests.services import Sink, SinkHandler

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
SEGMENT = "tag:customers and not tag:churned"
#: The fan-out writes this many recipients per batch and dies with batch KILL_AT written
#: but not yet enqueued.
BATCH, KILL_AT = 250, 4
#: The SMTP server stops answering DATA after this many messages, until released.
HOLD_AFTER = 400
THREADS = 4
FAN_OUT = f"""
import os, signal, sys
from nurture import queue
from nurture.broadcast import fanout
from nurture.cli import cli

fanout.BATCH = {BATCH}
real, calls = queue.dispatch, []


def dispatch(settings, ids):
    calls.append(ids)
    if len(calls) == {KILL_AT}:  # batch {KILL_AT} is committed; its queue message never goes
        os.kill(os.getpid(), signal.SIGKILL)
    return real(settings, ids)


queue.dispatch = dispatch
cli(sys.argv[1:], prog_name="nurture")
"""


@dataclass
class HoldingHandler(SinkHandler):
    """Keeps messages until `hold_after`, then leaves every sender waiting for its answer
    to DATA. A sender killed while waiting never heard a 250: that message is not kept."""

    hold_after: int | None = None
    held: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            hold = self.hold_after is not None and len(self.messages) >= self.hold_after
            self.held += hold
        if not hold:
            return await super().handle_DATA(server, session, envelope)
        while not self.released.is_set():
            await asyncio.sleep(0.05)
        return "421 Service not available, closing channel"

    def release(self) -> None:
        self.hold_after = None
        self.released.set()


@pytest.fixture
def holding_sink():
    sink = Sink()
    sink.handler = HoldingHandler(hold_after=HOLD_AFTER)
    sink.controller.handler = sink.handler
    sink.start()
    yield sink
    sink.handler.release()
    sink.stop()


#: Who each of the 5,000 is, by id modulo 10: 1,500 must get the issue, 3,500 must not.
KINDS = ("in", "in", "in", "untagged", "churned", "unsubscribed", "pending", "suppressed",
         "bounced", "prospect")  # fmt: skip


def population() -> tuple[list[dict], dict[str, list[str]], list[str], dict[str, list[str]]]:
    people, tags, suppressed = [], {}, []
    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for i in range(5000):
        email, kind = f"p{i:04}@example.com", KINDS[i % 10]
        kinds[kind].append(email)
        status = kind if kind in ("unsubscribed", "pending", "bounced") else "active"
        people.append({"email": email, "status": status})
        tags[email] = {"untagged": [], "churned": ["customers", "churned"],
                       "prospect": ["prospects"]}.get(kind, ["customers"])  # fmt: skip
        if kind in ("suppressed", "bounced"):
            suppressed.append(email)
    return people, tags, suppressed, kinds


def sent_count(settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(
            select(func.count()).where(Delivery.broadcast_id == 1, Delivery.status == "sent")
        )


def test_killed_fan_out_and_worker_resume_and_each_reader_gets_it_once(
    workspace: Path,
    pg_url: str,  # noqa: F811 - the fixture imported above
    redis_url: str,  # noqa: F811
    holding_sink: Sink,
    tmp_path: Path,
) -> None:
    env = {
        "NURTURE_WORKSPACE": str(workspace),
        "NURTURE_DATABASE_URL": pg_url,
        "NURTURE_REDIS_URL": redis_url,
        "NURTURE_SMTP_URL": holding_sink.url,
        "NURTURE_BASE_URL": "https://crumb.example",
        # a killed worker keeps its SMTP slots until they expire: leave room for the next
        "NURTURE_SMTP_CONCURRENCY": str(4 * THREADS),
    }
    settings = load_settings(workspace, env=env)
    people, tags, suppressed, kinds = population()
    started = time.monotonic()
    add_people(settings, people, tags, suppressed)
    seeded = time.monotonic() - started
    handler: HoldingHandler = holding_sink.handler  # type: ignore[assignment]
    workers = Workers(env, tmp_path)
    fan_out = None
    try:
        first = workers.start(threads=THREADS)
        started = time.monotonic()
        fan_out = subprocess.Popen(
            [sys.executable, "-c", FAN_OUT, "broadcast", "send", str(ISSUE), "--at", "now",
             "--no-local-time", "--segment", SEGMENT],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        fan_out.communicate(timeout=60)
        assert fan_out.returncode == -signal.SIGKILL
        with session_scope(settings) as session:
            row = session.get(Broadcast, 1)
            written = session.scalar(select(func.count()).where(Delivery.broadcast_id == 1))
            assert row.state == "sending" and row.fanned_out_at is None
            assert 0 < written < len(kinds["in"])  # stopped halfway, at its checkpoint
            checkpoint = row.checkpoint

        # every worker thread is now waiting on the SMTP server, mid-send: kill it there
        assert wait_for(lambda: handler.held >= THREADS, 60), handler.held
        time.sleep(0.3)
        workers.kill(first)
        with session_scope(settings) as session:
            in_flight = session.scalar(
                select(func.count()).where(Delivery.broadcast_id == 1, Delivery.status == "sending")
            )
        # each thread hangs on one email of the group it claimed (the rest of which is
        # claimed too, never attempted)
        assert THREADS <= in_flight <= THREADS * GROUP
        before_kill = len(holding_sink.messages)
        handler.release()

        # resume: send-due takes back what the dead worker held and finishes the fan-out
        # (no worker is alive, so anything `sending` is certainly abandoned) ...
        summary = send_due({**env, "NURTURE_RESEND_AFTER": "0.1"})
        # the emails each thread had handed to SMTP may go out twice; the rest never left
        unsent = in_flight - THREADS
        lost = (f"{unsent} taken back unsent, " if unsent else "") + f"{THREADS} maybe sent twice"
        assert f"({lost})" in summary, summary
        # ... a new worker sends, and send-due re-enqueues the batch whose message was lost
        workers.start(threads=THREADS)
        recover = {**env, "NURTURE_REQUEUE_AFTER": "2"}
        done = wait_for(lambda: send_due(recover) and sent_count(settings) == len(kinds["in"]),
                        120, every=2.0)  # fmt: skip
        assert done, f"{sent_count(settings)} of {len(kinds['in'])} sent"
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # anything still on its way arrives now
        send_due(env)  # marks the broadcast sent
    finally:
        if fan_out is not None and fan_out.poll() is None:
            fan_out.kill()
            fan_out.wait(10)
        workers.close()

    received = Counter(r for m in holding_sink.messages for r in m.recipients)
    assert set(received) == set(kinds["in"])  # nobody else ...
    assert set(received.values()) == {1}  # ... and each of them once
    for kind in set(KINDS) - {"in"}:
        assert not set(kinds[kind]) & set(received), kind
    assert all(m.message["Subject"].startswith("December:") for m in holding_sink.messages)
    with session_scope(settings) as session:
        row = session.get(Broadcast, 1)
        assert row.state == "sent" and row.checkpoint > checkpoint
        assert session.scalar(select(func.count()).where(Delivery.broadcast_id == 1)) == 1500
    print(f"\n5,000 subscribers seeded in {seeded:.2f} s; 1,500 emails sent in {elapsed:.1f} s "
          f"({before_kill} before the worker was killed, {THREADS} taken back from it)")  # fmt: skip
