"""Unsubscribing wins over anything already queued."""

from __future__ import annotations

from sqlalchemy import select

from nurture import clock
from nurture.cli import cli
from nurture.delivery.sending import send_delivery
from nurture.delivery.states import Outcome
from nurture.people.subscribers import get, suppress
from nurture.queue import dispatch
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Enrollment
from tests.helpers.sending import enqueue_welcome


def test_unsubscribed_after_enqueue_receives_nothing(settings, env, sink, runner):
    ids = enqueue_welcome(settings, "ana@example.com", "bo@example.com")
    assert len(ids) == 2

    result = runner.invoke(cli, ["unsubscribe", "ana@example.com"], env=env)
    assert result.exit_code == 0, result.output
    counts = dispatch(settings, ids)  # the queue messages still arrive at a worker

    assert [m.recipients for m in sink.messages] == [["bo@example.com"]]
    assert counts["not-mine"] == 1  # cancelled at unsubscribe time, so never claimed
    with session_scope(settings) as session:
        ana = get(session, "ana@example.com")
        assert ana.status == "unsubscribed"
        statuses = session.scalars(select(Delivery.status).where(Delivery.subscriber_id == ana.id))
        assert list(statuses) == ["cancelled"]
        enrollment = session.scalar(select(Enrollment).where(Enrollment.subscriber_id == ana.id))
        assert enrollment.status == "exited" and enrollment.next_due_at is None


def test_worker_rechecks_suppression_at_send_time(settings, sink):
    """Even a delivery nobody cancelled is skipped if the address became suppressed."""
    [delivery_id] = enqueue_welcome(settings, "cy@example.com")
    with session_scope(settings) as session:
        suppress(session, "cy@example.com", "complaint", clock.now())

    assert send_delivery(settings, delivery_id) == Outcome.SKIPPED
    assert sink.messages == []
    with session_scope(settings) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery.status == "skipped" and delivery.error == "address is suppressed"


def test_a_delivery_is_sent_once_however_often_its_message_arrives(settings, sink):
    [delivery_id] = enqueue_welcome(settings, "di@example.com")
    outcomes = [send_delivery(settings, delivery_id) for _ in range(3)]
    assert outcomes == [Outcome.SENT, Outcome.NOT_MINE, Outcome.NOT_MINE]
    assert len(sink.to("di@example.com")) == 1
