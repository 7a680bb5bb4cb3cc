"""The delivery state machine, on SQLite and PostgreSQL: who may write an outcome, what
send-due takes back and when, and which SMTP refusals suppress an address."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture import clock
from nurture.cli import cli
from nurture.content.sequences import catalog_for
from nurture.delivery.sending import attempt, send_batch, send_delivery
from nurture.delivery.states import Outcome
from nurture.journeys.scheduling import TAKEN_BACK, claim_due, requeue_stale
from nurture.people.enrolment import enroll
from nurture.people.subscribers import add, get, is_suppressed, unsubscribe
from nurture.settings import load_settings
from nurture.store.engine import get_engine, session_scope
from nurture.store.tables import Delivery, DeliveryStatus, Enrollment, Subscriber
from tests.helpers.sending import Meddling
from tests.helpers.sending import enqueue_welcome as enqueue


def enrollment_of(settings, email: str) -> Enrollment:
    with session_scope(settings) as session:
        sub = get(session, email)
        return session.scalar(select(Enrollment).where(Enrollment.subscriber_id == sub.id))


def test_an_overtaken_claim_records_nothing_and_the_enrolment_moves_once(
    settings, sink, monkeypatch
):
    [delivery_id] = enqueue(settings, "ana@example.com")

    def presumed_dead():
        # This worker is so slow that send-due takes the delivery back, and a second
        # worker claims and sends it, before the first one is done.
        with session_scope(settings) as session:
            later = clock.now() + settings.resend_after + timedelta(seconds=1)
            stale = requeue_stale(session, later, queued_after=None, retry_after=timedelta(0),
                                  resend_after=settings.resend_after)  # fmt: skip
        assert (stale.ids, stale.taken_back) == ([delivery_id], 1)
        assert attempt(settings, delivery_id).outcome == Outcome.SENT

    slow = Meddling(settings, presumed_dead)
    monkeypatch.setattr("nurture.delivery.sending.transport_for", lambda *a: slow)
    assert send_delivery(settings, delivery_id) == Outcome.SENT

    assert len(sink.to("ana@example.com")) == 2  # the documented at-least-once duplicate
    with session_scope(settings) as session:
        delivery = session.get(Delivery, delivery_id)
        assert (delivery.status, delivery.attempts) == ("sent", 2)
        assert delivery.recovered_at is not None and delivery.error == TAKEN_BACK
    seq = catalog_for(settings.sequences_dir).sequences["from-curious-to-customer"]
    assert enrollment_of(settings, "ana@example.com").next_step_id == seq.steps[1].id


def test_a_worker_overtaken_mid_group_sends_nothing_it_had_not_handed_to_smtp(
    settings, sink, monkeypatch
):
    """A worker so slow that send-due takes its whole group back while its first email
    is on the wire: that email may go out twice (it is marked so), but the second, never
    handed to SMTP, is not sent by the slow worker once the recovery has it."""
    first, second = enqueue(settings, "fi@example.com", "se@example.com")

    def presumed_dead():
        with session_scope(settings) as session:
            later = clock.now() + settings.resend_after + timedelta(seconds=1)
            stale = requeue_stale(session, later, queued_after=None, retry_after=timedelta(0),
                                  resend_after=settings.resend_after)  # fmt: skip
        assert (stale.ids, stale.taken_back, stale.maybe_sent) == ([first, second], 2, 1)
        assert send_batch(settings, [first, second]).counts[Outcome.SENT] == 2

    slow = Meddling(settings, presumed_dead)
    monkeypatch.setattr("nurture.delivery.sending.transport_for", lambda *a: slow)
    assert send_batch(settings, [first, second]).counts[Outcome.SENT] == 1

    assert len(sink.to("fi@example.com")) == 2  # the documented at-least-once duplicate
    assert len(sink.to("se@example.com")) == 1
    with session_scope(settings) as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
    assert rows[first].maybe_twice and rows[first].error == TAKEN_BACK
    assert not rows[second].maybe_twice and rows[second].error is None
    assert {d.status for d in rows.values()} == {"sent"}


def test_unsubscribed_while_on_the_wire_ends_the_enrolment_for_good(settings, sink, monkeypatch):
    [delivery_id] = enqueue(settings, "bo@example.com")

    def leaves():
        with session_scope(settings) as session:
            unsubscribe(session, get(session, "bo@example.com"), clock.now())

    slow = Meddling(settings, leaves)
    monkeypatch.setattr("nurture.delivery.sending.transport_for", lambda *a: slow)
    assert send_delivery(settings, delivery_id) == Outcome.SENT  # it was already leaving
    enrollment = enrollment_of(settings, "bo@example.com")
    assert enrollment.status == "exited" and enrollment.next_due_at is None
    assert enrollment.next_step_id == "welcome"  # not moved on to a step never to come


def test_what_send_due_takes_back_and_when(settings):
    now, minute = clock.now(), timedelta(minutes=1)
    rows = {
        "fresh queued": dict(status="queued", enqueued_at=now),
        "lost queued": dict(status="queued", enqueued_at=now - 10 * minute),
        "retry due": dict(status="retry", next_attempt_at=now - minute),
        "retry long overdue": dict(status="retry", next_attempt_at=now - 10 * minute),
        "retry later": dict(status="retry", next_attempt_at=now + minute),
        "sending": dict(status="sending", claimed_at=now - minute),
        "stranded": dict(status="sending", claimed_at=now - 20 * minute),
        "sent": dict(status="sent", claimed_at=now - 20 * minute),
    }
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        sub, _ = add(session, catalog, "cy@example.com", now, confirmed=True)
        names = {}
        for name, values in rows.items():
            delivery = Delivery(subscriber_id=sub.id, kind="confirm", created_at=now, **values)
            session.add(delivery)
            session.flush()
            names[delivery.id] = name

    def taken(**kw):  # what one send-due would take back, rolled back to try the next
        with Session(get_engine(settings)) as session:
            stale = requeue_stale(session, now, resend_after=10 * minute, **kw)
            session.rollback()
        return sorted(names[i] for i in stale.ids), stale.taken_back

    # embedded: a retry comes back as soon as it is due
    assert taken(queued_after=5 * minute, retry_after=timedelta(0)) == (
        ["lost queued", "retry due", "retry long overdue", "stranded"], 1,
    )  # fmt: skip
    # a broker with messages waiting: queued ones are in the backlog, and a retry is the
    # retried message's job until it is requeue_after late
    assert taken(queued_after=None, retry_after=5 * minute) == (
        ["retry long overdue", "stranded"], 1,
    )  # fmt: skip


def test_stats_and_send_due_tell_unsent_from_maybe_sent_twice(runner, env, settings, sink):
    """Two deliveries left `sending` by a lost worker: one it had handed to SMTP (the
    server may have it), one it never attempted. Both are sent again; only the first is
    reported, and kept, as maybe sent twice."""
    handed, unsent = enqueue(settings, "di@example.com", "ed@example.com")
    an_hour_ago = clock.now() - timedelta(hours=1)
    with session_scope(settings) as session:
        for delivery_id in (handed, unsent):
            d = session.get(Delivery, delivery_id)
            d.status, d.claimed_at, d.attempts = DeliveryStatus.SENDING, an_hour_ago, 1
        session.get(Delivery, handed).handed_at = an_hour_ago

    result = runner.invoke(cli, ["stats"], env=env)
    assert ("deliveries: 0 queued, 2 sending, 0 to retry, 2 stuck, 0 taken back unsent, "
            "0 maybe sent twice") in result.output  # fmt: skip
    assert "broker: embedded" in result.output

    result = runner.invoke(cli, ["send-due"], env=env)
    assert result.output.strip() == (
        "send-due: 0 due, 2 retried or recovered (1 taken back unsent, 1 maybe sent twice), 2 sent"
    )
    result = runner.invoke(cli, ["stats"], env=env)
    assert ("deliveries: 0 queued, 0 sending, 0 to retry, 0 stuck, 1 taken back unsent, "
            "1 maybe sent twice") in result.output  # fmt: skip
    twice = runner.invoke(cli, ["subscribers", "show", "di@example.com"], env=env)
    assert TAKEN_BACK in twice.output
    once = runner.invoke(cli, ["subscribers", "show", "ed@example.com"], env=env)
    assert "maybe" not in once.output
    assert len(sink.to("di@example.com")) == len(sink.to("ed@example.com")) == 1


@pytest.fixture
def picky(env, timed_sink):
    """Settings sending to a sink that can refuse our sender or a message's content."""
    return load_settings(env["NURTURE_WORKSPACE"], env={**env, "NURTURE_SMTP_URL": timed_sink.url})


def test_a_refused_sender_suppresses_no_one_and_waits(picky, timed_sink):
    ids = enqueue(picky, "eve@example.com", "fay@example.com")
    timed_sink.handler.refuse_sender = (550, "5.7.1 Sender address rejected")
    outcomes = [attempt(picky, i) for i in ids]
    # the first finds the server refusing us; the batch would postpone the second
    assert outcomes[0].outcome == Outcome.RETRY and outcomes[0].server_down
    with session_scope(picky) as session:
        assert not is_suppressed(session, "eve@example.com")
        assert get(session, "eve@example.com").status == "active"


def test_refused_content_fails_that_email_without_suppressing(picky, timed_sink):
    [delivery_id] = enqueue(picky, "gil@example.com")
    timed_sink.handler.refuse_data = (554, "5.6.0 Message rejected as spam")
    assert send_delivery(picky, delivery_id) == Outcome.FAILED
    with session_scope(picky) as session:
        assert not is_suppressed(session, "gil@example.com")
        assert get(session, "gil@example.com").status == "active"
        assert "554" in session.get(Delivery, delivery_id).error


def test_send_due_waits_for_a_silent_server_once_not_once_per_email(runner, env, monkeypatch):
    """A server that accepts the connection and never answers costs one timeout per run:
    the rest of the run is postponed with the first email (embedded mode has no worker
    to hand the wait to)."""
    import socket
    import time

    monkeypatch.setattr("nurture.delivery.transports.SMTP_TIMEOUT", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(50)  # connections complete, no greeting ever comes
        port = silent.getsockname()[1]
        settings = load_settings(env["NURTURE_WORKSPACE"], env=env)
        enqueue(settings, *(f"h{i}@example.com" for i in range(20)))
        with session_scope(settings) as session:  # due again, as if claimed by an earlier run
            session.execute(Delivery.__table__.update().values(status="retry",
                                                               next_attempt_at=clock.now()))  # fmt: skip
        started = time.monotonic()
        result = runner.invoke(cli, ["send-due"], env={**env, "NURTURE_SMTP_URL":
                                                       f"smtp://127.0.0.1:{port}"})  # fmt: skip
        took = time.monotonic() - started
    assert result.output.strip() == "send-due: 0 due, 20 retried or recovered, 20 retry"
    assert took < 5, f"send-due took {took:.1f} s"
    with session_scope(settings) as session:
        tries = list(session.scalars(select(Delivery.attempts)))
    assert sorted(tries) == [0] * 19 + [1]


#: What must never reach a log line or a delivery's error: the message, its links and
#: the tokens in them, the subscriber's address.
NEVER_LOGGED = ("List-Unsubscribe", "Content-Type", "crumb.example/", "/unsubscribe/",
                "/confirm/", "/c/", "/o/", "@example.com>")  # fmt: skip


def logged(caplog) -> str:
    """What nurture logged (the sink's own debug log shows the whole SMTP dialogue)."""
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    return "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in ours)


def test_a_4xx_retry_logs_the_delivery_domain_and_reply_never_the_message(settings, sink, caplog):
    [delivery_id] = enqueue(settings, "ana@example.com")
    sink.handler.refuse["*"] = (451, "4.3.0 Try again later")
    with caplog.at_level(logging.DEBUG):
        assert send_delivery(settings, delivery_id) == Outcome.RETRY
    text = logged(caplog)
    assert f"delivery {delivery_id} to @example.com retry: SMTP 451: 4.3.0 Try again later" in text
    assert "ana@example.com" not in text
    for leak in NEVER_LOGGED:
        assert leak not in text


def test_an_email_that_cannot_be_built_is_logged_without_its_body_or_tokens(settings, sink, caplog):
    """An address the message builder cannot encode: the error is an internal one,
    retried; neither the log nor the delivery's error carries the message, whose repr
    the encoding error holds."""
    catalog = catalog_for(settings.sequences_dir)
    now = clock.now()
    with session_scope(settings) as session:
        sub = Subscriber(email="zoë@example.com", status="active", source="test",
                         attributes={}, created_at=now, confirmed_at=now)  # fmt: skip
        session.add(sub)
        session.flush()
        enroll(session, sub.id, catalog.sequences["from-curious-to-customer"], now)
    with session_scope(settings) as session:
        [delivery_id] = claim_due(session, catalog, now)
    with caplog.at_level(logging.DEBUG):
        send_delivery(settings, delivery_id)
    with session_scope(settings) as session:
        error = session.get(Delivery, delivery_id).error or ""
    text = logged(caplog)
    assert "zoë" not in text
    for leak in NEVER_LOGGED:
        assert leak not in text and leak not in error
