"""Distributed mode under the faults real deployments meet, on PostgreSQL, Redis, real
`nurture worker` processes and an aiosmtpd sink. Every count is exact, and the timings
that would take minutes in production are shortened through the settings
(NURTURE_REQUEUE_AFTER, NURTURE_RESEND_AFTER, NURTURE_RETRY_BACKOFF), not faked clocks:
freezegun and a live Dramatiq worker do not mix."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter

from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import cli
from nurture.delivery.ratelimit import Throttle, bucket_for
from nurture.delivery.states import MAX_ATTEMPTS
from nurture.people.subscribers import is_suppressed
from nurture.queue import throttle_for
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Subscriber
from tests.helpers.distributed import (
    per_recipient,
    queue_depth_of,
    seed,
    send_due,
    settings_for,
    statuses,
    wait_for,
)
from tests.services import Sink, flush_keeping_claim

# The fixtures: Redis and PostgreSQL of this test's own, `nurture worker` processes.


def attempts(settings) -> list[int]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Delivery.attempts).order_by(Delivery.id)))


def test_worker_killed_mid_send_loses_nothing(dist_env, workers, timed_sink):
    """SIGKILL mid-send: nothing is lost, and only an email the dead worker had handed to
    SMTP can arrive twice. Each of its threads had at most one: the rows it left
    `sending` marked handed. The recovery marks exactly those `maybe_twice`, sends the
    others once, and every duplicate at the sink is one of them."""
    dist_env.update(NURTURE_REQUEUE_AFTER="2", NURTURE_RESEND_AFTER="20",
                    NURTURE_SMTP_CONCURRENCY="8")  # fmt: skip
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 1000)
    timed_sink.handler.delay = 0.03  # each send takes a while: some are mid-way at the kill
    assert send_due(dist_env) == "send-due: 1000 due, 1000 enqueued"

    doomed = workers.start(threads=4)
    assert wait_for(lambda: len(timed_sink.messages) >= 300, 60)
    workers.kill(doomed)  # SIGKILL, main and forked processes: a host that lost power
    received_at_kill = len(timed_sink.messages)
    # Nothing else runs until the next worker starts: these are the dead worker's rows.
    with session_scope(settings) as session:
        left = dict(session.execute(
            select(Delivery.id, Delivery.handed_at.is_not(None))
            .where(Delivery.status == "sending")
        ).all())  # fmt: skip
    handed = {i for i, was_handed in left.items() if was_handed}
    assert len(handed) <= 4, "more emails on the wire than the worker had threads"

    started = time.monotonic()
    workers.start(threads=4)
    while statuses(settings) != {"sent": 1000} and time.monotonic() - started < 120:
        send_due(dist_env)  # cron, sped up
        time.sleep(1)
    recovery = time.monotonic() - started

    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails), "an email was lost"
    assert statuses(settings) == {"sent": 1000}
    with session_scope(settings) as session:
        rows = session.execute(
            select(Delivery.id, Subscriber.email, Delivery.maybe_twice, Delivery.recovered_at)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        ).all()  # fmt: skip
    twice = {r.email for r in rows if r.maybe_twice}
    duplicated = {r for (r, _), n in received.items() if n > 1}
    print(f"\nkilled after {received_at_kill} of 1000 sent; {len(left)} left claimed, "
          f"{len(handed)} of them handed to SMTP; {sum(received.values()) - 1000} duplicates; "
          f"all delivered {recovery:.1f} s after the restart")  # fmt: skip
    assert duplicated <= twice, "an email went out twice without being marked maybe twice"
    # what the dead worker left is labelled by whether it had handed it to SMTP
    taken_back = {r.id: r.maybe_twice for r in rows if r.id in left}
    assert all(r.recovered_at is not None for r in rows if r.id in left)
    assert {i for i, maybe in taken_back.items() if maybe} == handed
    unsent = sum(1 for r in rows if r.recovered_at is not None and not r.maybe_twice)
    result = CliRunner().invoke(cli, ["stats", "single"], env=dist_env)
    assert f"0 stuck, {unsent} taken back unsent, {len(twice)} maybe sent twice" in result.output


def test_flushed_redis_queue_is_recovered_by_the_next_send_due(dist_env, workers, timed_sink):
    dist_env["NURTURE_REQUEUE_AFTER"] = "1"
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 300)
    assert send_due(dist_env) == "send-due: 300 due, 300 enqueued"
    assert queue_depth_of(dist_env) == 6  # 50 deliveries per message

    flush_keeping_claim(dist_env["NURTURE_REDIS_URL"])  # Redis restarted without persistence
    assert queue_depth_of(dist_env) == 0
    time.sleep(1.2)
    workers.start(threads=4)
    assert send_due(dist_env) == "send-due: 0 due, 300 retried or recovered, 300 enqueued"

    assert wait_for(lambda: statuses(settings) == {"sent": 300}, 60), statuses(settings)
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails)
    assert set(received.values()) == {1}


def test_server_answering_451_for_a_while_gets_everything_once(dist_env, workers, timed_sink):
    """451 for four seconds, our scaled-down minute (retries start at 0.5 s instead of
    2 minutes); Dramatiq's retries alone bring every email through, send-due adds nothing."""
    dist_env["NURTURE_RETRY_BACKOFF"] = "0.5"
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 200)
    timed_sink.handler.refuse["*"] = (451, "4.7.1 Greylisted, try again later")
    workers.start(threads=4)
    outage = time.monotonic()
    assert send_due(dist_env) == "send-due: 200 due, 200 enqueued"
    assert wait_for(lambda: statuses(settings) == {"retry": 200}, 30), statuses(settings)
    time.sleep(max(0.0, 4 - (time.monotonic() - outage)))
    assert timed_sink.messages == []
    timed_sink.handler.refuse.clear()

    assert wait_for(lambda: statuses(settings) == {"sent": 200}, 60), statuses(settings)
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails)
    assert set(received.values()) == {1}
    tries = attempts(settings)
    assert min(tries) >= 2 and max(tries) <= MAX_ATTEMPTS
    assert send_due(dist_env) == "send-due: 0 due, 0 enqueued"
    time.sleep(1)
    assert len(timed_sink.messages) == 200
    print(f"\n451 for 4 s: delivered after {max(tries)} attempts at most")


def test_unreachable_server_is_retried_without_hammering_it(dist_env, workers, timed_sink):
    late = Sink()  # its port is chosen; nothing listens there yet
    dist_env.update(NURTURE_SMTP_URL=late.url, NURTURE_RETRY_BACKOFF="0.5")
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 120)
    workers.start(threads=4)
    down = time.monotonic()
    started = False
    try:
        assert send_due(dist_env) == "send-due: 120 due, 120 enqueued"
        assert wait_for(lambda: statuses(settings) == {"retry": 120}, 30), statuses(settings)
        time.sleep(max(0.0, 2 - (time.monotonic() - down)))
        started = bool(late.start())
        assert wait_for(lambda: statuses(settings) == {"sent": 120}, 60), statuses(settings)
        received = per_recipient(late)
        assert {r for r, _ in received} == set(emails)
        assert set(received.values()) == {1}
        # one delivery per queue message found the server down each time; the others
        # were postponed with it, not tried one by one
        assert sum(1 for n in attempts(settings) if n > 1) <= 3
    finally:
        if started:
            late.stop()


def test_550_suppresses_that_address_and_the_rest_is_delivered(dist_env, workers, timed_sink):
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 100)
    gone = "reader7@example.com"
    timed_sink.handler.refuse[gone] = (550, "5.1.1 No such user")
    worker = workers.start(threads=4)
    assert send_due(dist_env) == "send-due: 100 due, 100 enqueued"
    assert wait_for(lambda: statuses(settings) == {"sent": 99, "failed": 1}, 60)

    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails) - {gone}
    assert set(received.values()) == {1}
    with session_scope(settings) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == gone))
        assert sub.status == "bounced"
        assert is_suppressed(session, gone)
        failed = session.scalar(select(Delivery).where(Delivery.subscriber_id == sub.id))
        assert failed.status == "failed" and failed.attempts == 1 and "550" in failed.error
    log = workers.log(worker)
    assert "Retrying message" not in log, "a hard bounce was retried"
    # one INFO line per queue message (50 deliveries each) says what became of them
    lines = re.findall(r"\[nurture.queue\] \[INFO\] 50 deliveries: (\d+) sent, (\d+) failed", log)
    assert len(lines) == 2, log
    assert [sum(int(line[k]) for line in lines) for k in (0, 1)] == [99, 1]
    shown = CliRunner().invoke(cli, ["subscribers", "show", gone], env=dist_env)
    assert "bounced" in shown.output and "SMTP 550: 5.1.1 No such user" in shown.output


def queued_deliveries(redis_url: str) -> list[list[int]]:
    """The delivery ids of each message waiting in the queue, as Dramatiq's Redis broker
    keeps them: message ids in the queue's list, the messages in its `.msgs` hash."""
    import json

    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        ids = client.lrange("dramatiq:nurture", 0, -1)
        bodies = client.hmget("dramatiq:nurture.msgs", ids) if ids else []
    finally:
        client.close()
    return [json.loads(body)["args"][0] for body in bodies]


def test_unsubscribing_while_emails_are_queued_stops_them(dist_env, workers, timed_sink):
    """200 queued and going out at 25/s; 60 people leave in the middle: none of them gets
    it. The sink holds its answers while they leave, so every worker thread waits on the
    email it is sending and none can reach theirs, however slow the unsubscribes are."""
    dist_env["NURTURE_SEND_RATE"] = "25"
    settings = settings_for(dist_env)
    emails = seed(settings, "single", 200)
    assert send_due(dist_env) == "send-due: 200 due, 200 enqueued"
    # each queue message carries 50 deliveries, sent in order: take the last 15 of each
    messages = queued_deliveries(dist_env["NURTURE_REDIS_URL"])
    assert sorted(len(m) for m in messages) == [50, 50, 50, 50]
    with session_scope(settings) as session:
        subscriber_of = dict(session.execute(select(Delivery.id, Delivery.subscriber_id)).all())
    leaving = {emails[subscriber_of[d] - 1] for message in messages for d in message[35:]}
    timed_sink.handler.paused.set()
    workers.start(threads=4)
    assert wait_for(lambda: timed_sink.handler.waiting >= 1, 30)  # sending has begun
    runner = CliRunner()
    for email in sorted(leaving):
        result = runner.invoke(cli, ["unsubscribe", email], env=dist_env)
        assert result.exit_code == 0, result.output
    timed_sink.handler.paused.clear()

    assert wait_for(lambda: statuses(settings) == {"sent": 140, "cancelled": 60}, 60), statuses(
        settings
    )
    received = per_recipient(timed_sink)
    assert not leaving & {r for r, _ in received}
    assert {r for r, _ in received} == set(emails) - leaving
    assert set(received.values()) == {1}


def test_send_rate_holds_across_workers(dist_env, workers, timed_sink):
    """NURTURE_SEND_RATE=50 with two worker processes: counted from the moment the
    emails were enqueued, the sink never holds more than the limiter's buckets allowed
    (5 per 100 ms bucket of the same clock), since an email is admitted before it is
    sent. How close to the rate a busy machine gets is printed, not asserted."""
    dist_env.update(NURTURE_SEND_RATE="50", NURTURE_SMTP_CONCURRENCY="8")
    settings = settings_for(dist_env)
    emails = seed(settings, "short", 300)
    workers.start(processes=2, threads=4)
    enqueued_at = time.time()
    assert send_due(dist_env) == "send-due: 300 due, 300 enqueued"
    assert wait_for(lambda: len(timed_sink.messages) >= 300, 120)

    limit, bucket_ms = bucket_for(50)
    first = int(enqueued_at * 1000) // bucket_ms
    arrived = sorted(timed_sink.handler.wall)
    for n, at in enumerate(arrived, start=1):
        buckets = int(at * 1000) // bucket_ms - first + 1
        assert n <= limit * buckets, f"{n} emails in the first {buckets} buckets of {bucket_ms} ms"
    rate = (len(arrived) - 1) / (arrived[-1] - arrived[0])
    print(f"\nNURTURE_SEND_RATE=50: {rate:.1f}/s at the sink over {len(arrived)} emails")
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails)
    assert set(received.values()) == {1}


def test_the_limiter_admits_no_more_than_a_bucket_holds(redis_url):
    """Two throttles (two workers) of 4 threads each share 50/s through Redis. Each
    admission the limiter grants is timed just before and after its Redis call; those
    whose both times fall in one bucket of the limiter's clock were certainly admitted
    in it, and no bucket has more than its share. (A slow machine only makes fewer
    admissions certain, never a bucket fuller.)"""
    from dramatiq.rate_limits.backends import RedisBackend

    limit, bucket_ms = bucket_for(50)
    granted: list[tuple[float, float]] = []
    passed = Counter[str]()
    lock = threading.Lock()
    wanted = 150

    def timed(real):
        @contextlib.contextmanager
        def acquire(*args, **kwargs):
            before = time.time()
            with real(*args, **kwargs) as acquired:
                if acquired:
                    with lock:
                        granted.append((before, time.time()))
                yield acquired

        return acquire

    throttles = [throttle_for(RedisBackend(url=redis_url), 50, None) for _ in range(2)]
    for throttle in throttles:
        throttle.rate.acquire = timed(throttle.rate.acquire)

    def thread(throttle: Throttle) -> None:
        with throttle.batch(should_stop=lambda: passed["gate"] >= wanted) as gate:
            while gate():
                with lock:
                    passed["gate"] += 1

    pool = [threading.Thread(target=thread, args=(t,)) for t in throttles for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert passed["gate"] >= wanted
    assert len(granted) == passed["gate"]  # the gate lets through what the limiter grants
    bucket = lambda t: int(t * 1000) // bucket_ms  # noqa: E731
    certain = Counter(bucket(b) for b, a in granted if bucket(b) == bucket(a))
    print(f"\n{len(granted)} admitted, {sum(certain.values())} certainly in their bucket")
    assert max(certain.values()) <= limit
