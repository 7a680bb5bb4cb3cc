"""The database going away mid-send: a worker that has handed an email to SMTP records it
on a fresh connection, hands the rest of its group back at once, and nothing is lost or
sent twice. First one connection cut (the session's PostgreSQL), then a whole server of
the test's own restarted with `pg_ctl restart -m fast` under real workers."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from nurture.cli import cli
from nurture.delivery.sending import DB_LOST, GROUP, send_batch
from nurture.delivery.states import Outcome
from nurture.store import engine as nurture_db
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Enrollment
from tests.helpers.distributed import (
    SINGLE,
    Workers,
    per_recipient,
    seed,
    send_due,
    settings_for,
    statuses,
    wait_for,
)
from tests.helpers.sending import Meddling
from tests.helpers.sending import enqueue_welcome as enqueue
from tests.pg_cluster import Cluster
from tests.services import Sink


def cut_connections(url: str) -> int:
    """Terminate every other session on this database, as a server restart would."""
    with psycopg.connect(url, autocommit=True) as admin:
        return len(
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_sent_email_is_recorded_after_the_connection_is_cut_and_the_rest_handed_back(
    settings, sink, monkeypatch, runner, env
):
    ids = enqueue(settings, *(f"p{i}@example.com" for i in range(5)))
    cut: list[int] = []
    slow = Meddling(settings, lambda: cut.append(cut_connections(settings.database_url)))
    slow.calls = -1  # the cut comes while the second email is on the wire
    monkeypatch.setattr("nurture.delivery.sending.transport_for", lambda *a: slow)

    batch = send_batch(settings, ids)

    assert cut and cut[0] >= 2  # the worker's connections
    assert batch.counts == Counter({Outcome.SENT: 2, Outcome.RETRY: 3})
    with session_scope(settings) as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
    rest = ids[2:]
    assert [(rows[i].status, rows[i].attempts) for i in ids[:2]] == [("sent", 1)] * 2
    # handed back at once: due now, the claim's attempt not counted, not left `sending`
    assert {(rows[i].status, rows[i].attempts, rows[i].handed_at) for i in rest} == {
        ("retry", 0, None)
    }
    assert {rows[i].error for i in rest} == {f"not attempted: {DB_LOST}"}
    result = runner.invoke(cli, ["send-due"], env=env)
    assert result.output.strip() == "send-due: 0 due, 3 retried or recovered, 3 sent"
    assert Counter(r for m in sink.messages for r in m.recipients) == {
        f"p{i}@example.com": 1 for i in range(5)
    }


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_records_a_crash_lost_are_written_again_on_the_fresh_connection(
    settings, sink, monkeypatch
):
    """A record commits without waiting for the disk, so a server crash can forget it:
    the worker keeps it until a commit that waits has followed, and writes it again on
    its fresh connection."""
    ids = enqueue(settings, *(f"p{i}@example.com" for i in range(5)))

    def crash() -> None:  # the server forgot the first email's record and its move
        with session_scope(settings) as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == ids[0])
                .values(status="sending", sent_at=None, message_id=None)
            )
            session.execute(
                update(Enrollment)
                .where(Enrollment.id == first.enrollment_id)
                .values(next_step_id="welcome", next_due_at=None)
            )
        cut_connections(settings.database_url)

    with session_scope(settings) as session:
        first = session.get(Delivery, ids[0])
        session.expunge(first)
    slow = Meddling(settings, crash)
    slow.calls = -2  # while the third email is on the wire
    monkeypatch.setattr("nurture.delivery.sending.transport_for", lambda *a: slow)

    batch = send_batch(settings, ids)

    assert batch.counts == Counter({Outcome.SENT: 3, Outcome.RETRY: 2})
    sent_first = next(m for m in sink.messages if m.recipients == ["p0@example.com"])
    with session_scope(settings) as session:
        row = session.get(Delivery, ids[0])
        enrolment = session.get(Enrollment, first.enrollment_id)
        assert (row.status, row.attempts) == ("sent", 1)
        assert row.message_id == sent_first.message["Message-ID"]
        assert enrolment.next_step_id == "know-your-audience"
    assert len(sink.messages) == 3


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def restart_env(
    workspace: Path, own_cluster: Cluster, redis_url: str, timed_sink: Sink
) -> Iterator[dict[str, str]]:
    (workspace / "sequences" / "single.yaml").write_text(SINGLE)
    engine = nurture_db.engine_for(own_cluster.url)
    nurture_db.upgrade(engine)
    yield {
        "NURTURE_WORKSPACE": str(workspace),
        "NURTURE_DATABASE_URL": own_cluster.url,
        "NURTURE_REDIS_URL": redis_url,
        "NURTURE_SMTP_URL": timed_sink.url,
        "NURTURE_BASE_URL": "https://crumb.example",
        "NURTURE_SMTP_CONCURRENCY": "8",
        # the defaults: a delivery that waited for the recovery timer would miss the deadline
        "NURTURE_REQUEUE_AFTER": "300",
        "NURTURE_RESEND_AFTER": "600",
    }
    nurture_db.dispose(own_cluster.url)  # before the server goes


EMAILS = 1500


def all_sent(settings) -> bool:
    with contextlib.suppress(Exception):  # the server may still be starting
        return statuses(settings) == {"sent": EMAILS}
    return False


def send_through(env, cluster: Cluster, sink: Sink, logs: Path, fault) -> tuple[int, str]:
    """EMAILS emails sent by two worker processes of four threads, with `fault(cluster)`
    after the first 300 and no `send-due` from then on: nothing may wait for
    NURTURE_RESEND_AFTER (600 s). Returns the emails received at the fault, and the log."""
    settings = settings_for(env)
    sink.handler.delay = 0.02  # so the fault lands while the workers send
    workers = Workers(env, logs)
    try:
        worker = workers.start(processes=2, threads=4)
        assert send_due(env) == f"send-due: {EMAILS} due, {EMAILS} enqueued"
        assert wait_for(lambda: len(sink.messages) >= 300, 60)
        fault(cluster)
        at_fault = len(sink.messages)
        assert at_fault < EMAILS, "the fault came after the sending, not in the middle"

        done = wait_for(lambda: all_sent(settings), 180, every=0.5)
        time.sleep(0.5)  # anything still on its way arrives now
        log = workers.log(worker)
    finally:
        workers.close()
    assert done, statuses(settings)
    return at_fault, log


def assert_each_sent_once(env, sink: Sink, emails: list[str]) -> None:
    received = per_recipient(sink)
    message_ids = Counter(m.message["Message-ID"] for m in sink.messages)
    assert {r for r, _ in received} == set(emails), "an email was lost"
    assert set(received.values()) == {1}, "an email was sent twice"
    assert set(message_ids.values()) == {1} and len(message_ids) == EMAILS
    with session_scope(settings_for(env)) as session:
        taken_back = session.scalar(select(func.count()).where(Delivery.recovered_at.is_not(None)))
    assert taken_back == 0
    stats = CliRunner().invoke(cli, ["stats", "single"], env=env)
    assert "0 stuck, 0 taken back unsent, 0 maybe sent twice" in stats.output, stats.output


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("fault", [Cluster.restart, Cluster.crash], ids=["restart", "crash"])
def test_postgres_restarted_or_crashed_mid_send_loses_nothing_and_sends_nothing_twice(
    restart_env, own_cluster, timed_sink, tmp_path, fault
):
    """`pg_ctl restart -m fast` cuts every connection; a crash (`pg_ctl stop -m
    immediate`) also loses the records the server had not yet written, which the
    workers, alive, write again on their fresh connections."""
    emails = seed(settings_for(restart_env), "single", EMAILS)
    at_fault, log = send_through(restart_env, own_cluster, timed_sink, tmp_path, fault)
    print(f"\n{fault.__name__} after {at_fault} of {EMAILS} emails: "
          f"{len(timed_sink.messages)} received, "
          f"{log.count('database connection lost')} writes tried again on a fresh connection")  # fmt: skip
    assert "database connection lost" in log
    assert_each_sent_once(restart_env, timed_sink, emails)


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_and_postgres_crashing_together_repeat_at_most_a_group_per_thread(
    restart_env, own_cluster, timed_sink, tmp_path
):
    """The bound docs/distributed.md states: when the worker dies with the server, the
    emails whose records the server had not yet written may go out again, at most the
    group in progress of each thread; nothing is lost."""
    # The recovery timers, sped up: the dead worker's queue messages are lost with it.
    # Its SMTP slots come back only after ratelimit.SLOT_TTL_MS: room for the next one.
    restart_env.update(NURTURE_RESEND_AFTER="5", NURTURE_REQUEUE_AFTER="2",
                       NURTURE_SMTP_CONCURRENCY="16")  # fmt: skip
    settings = settings_for(restart_env)
    emails = seed(settings, "single", EMAILS)
    timed_sink.handler.delay = 0.02
    workers = Workers(restart_env, tmp_path)
    try:
        doomed = workers.start(processes=2, threads=4)
        assert send_due(restart_env) == f"send-due: {EMAILS} due, {EMAILS} enqueued"
        assert wait_for(lambda: len(timed_sink.messages) >= 300, 60)
        workers.kill(doomed)
        own_cluster.crash()
        workers.start(processes=2, threads=4)
        done = wait_for(lambda: bool(send_due(restart_env)) and all_sent(settings), 180, every=1)
        time.sleep(0.5)
    finally:
        workers.close()
    assert done, statuses(settings)
    received = per_recipient(timed_sink)
    assert {r for r, _ in received} == set(emails), "an email was lost"
    repeated = sum(n - 1 for n in received.values())
    print(f"\nworker and server killed together: {repeated} emails sent again")
    assert repeated <= 2 * 4 * GROUP
