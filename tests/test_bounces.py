"""Bounces and complaints after the send: VERP envelope senders, DSN and ARF samples of
real providers, the suppression policy, and `bounces receive` on a pipe."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from nurture import queue
from nurture.broadcast import fanout
from nurture.cli import cli
from nurture.delivery import sending
from nurture.delivery.bounces.handling import handle_message
from nurture.people.subscribers import email_hash
from nurture.reports.stats import COLUMNS
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event, Subscriber, Suppression
from tests.helpers.bounces import BOUNCE_ADDRESS, sample, send_welcome
from tests.helpers.broadcast import ISSUE, add_people


@pytest.fixture
def bounce_env(env):
    return {**env, "NURTURE_BOUNCE_ADDRESS": BOUNCE_ADDRESS}


@pytest.fixture
def bsettings(bounce_env):
    return load_settings(bounce_env["NURTURE_WORKSPACE"], env=bounce_env)


def _state(settings, address):
    with session_scope(settings) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
        events = session.execute(
            select(Event.kind, Event.data).where(Event.subscriber_id == sub.id)
        ).all()
        suppressed = session.scalar(
            select(Suppression.reason).where(Suppression.email_hash == email_hash(address))
        )
        queued = session.scalars(
            select(Delivery.status).where(Delivery.subscriber_id == sub.id)
        ).all()
    return (
        sub.status,
        [(k, d) for k, d in events if k in ("bounced", "complained")],
        suppressed,
        queued,
    )


def test_envelope_sender_is_a_signed_verp_address_and_from_is_unchanged(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    assert sent.envelope_sender.startswith("bounces+")
    assert sent.envelope_sender.endswith("@bounce.crumb.example")
    assert len(sent.envelope_sender.partition("@")[0]) <= 64  # RFC 5321 local-part limit
    [received] = sink.to("ana@example.com")
    assert received.message["From"] == "Maya at Crumb & Co <hello@crumb.example>"


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(settings, sink):
    sent = send_welcome(settings, sink, "ana@example.com")
    assert sent.envelope_sender == "hello@crumb.example"


@pytest.mark.parametrize("name", ["postfix-hard.eml", "gmail-hard.eml", "outlook-hard.eml",
                                  "exim-hard.eml", "ses-hard.eml"])  # fmt: skip
def test_a_hard_bounce_suppresses_at_once_and_cancels_what_is_queued(bsettings, sink, name):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    handled = handle_message(bsettings, sample(name, sent))
    assert (handled.outcome, handled.delivery_id, handled.suppressed) == (
        "hard bounce", sent.delivery_id, True)  # fmt: skip
    status, events, suppressed, _ = _state(bsettings, "ana@example.com")
    assert status == "bounced" and suppressed
    [(kind, data)] = events
    assert kind == "bounced" and data["type"] == "hard"
    assert re.search(r"\b55[0-9]\b", data["reason"]) and data["provider"]


def test_a_bounce_is_matched_by_message_id_when_the_verp_address_was_mangled(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    lowered = sent.envelope_sender.lower()  # some servers lower-case the local part
    handled = handle_message(bsettings, sample("postfix-hard.eml", sent, verp=lowered))
    assert (handled.outcome, handled.delivery_id) == ("hard bounce", sent.delivery_id)


def test_a_bounce_for_no_email_of_ours_is_unmatched_and_changes_nothing(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    forged = sent.__class__(sent.delivery_id, sent.address,
                            "bounces+forged.token.xyz@bounce.crumb.example",
                            "<nothing-of-ours@crumb.example>")  # fmt: skip
    handled = handle_message(bsettings, sample("postfix-hard.eml", forged))
    assert handled.outcome == "unmatched"
    status, events, suppressed, _ = _state(bsettings, "ana@example.com")
    assert (status, events, suppressed) == ("active", [], None)


def test_the_same_bounce_read_twice_is_handled_once(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    raw = sample("gmail-hard.eml", sent)
    assert handle_message(bsettings, raw).outcome == "hard bounce"
    assert handle_message(bsettings, raw).outcome == "duplicate"
    assert len(_state(bsettings, "ana@example.com")[1]) == 1


def test_soft_bounces_suppress_on_the_third_within_the_window_not_before(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    for _ in range(2):
        handled = handle_message(bsettings, sample("yahoo-soft.eml", sent))
        assert (handled.outcome, handled.suppressed) == ("soft bounce", False)
    status, events, suppressed, _ = _state(bsettings, "ana@example.com")
    assert status == "active" and suppressed is None and len(events) == 2
    assert events[0][1]["type"] == "soft" and "4.2.2" in events[0][1]["reason"]
    handled = handle_message(bsettings, sample("yahoo-soft.eml", sent))
    assert (handled.outcome, handled.suppressed) == ("soft bounce", True)
    status, _, suppressed, deliveries = _state(bsettings, "ana@example.com")
    assert status == "bounced" and suppressed == "3 soft bounces in 30 days"
    assert "queued" not in deliveries


@pytest.mark.parametrize("name", ["yahoo-arf.eml", "outlook-arf.eml"])
def test_a_complaint_unsubscribes_from_everything_and_suppresses(bsettings, sink, name):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    handled = handle_message(bsettings, sample(name, sent))
    assert (handled.outcome, handled.delivery_id) == ("complaint", sent.delivery_id)
    status, events, suppressed, _ = _state(bsettings, "ana@example.com")
    assert status == "unsubscribed" and suppressed.startswith("complained")
    assert [k for k, _ in events] == ["complained"]
    assert events[0][1]["reason"].startswith("abuse report")


def test_a_complaint_while_a_broadcast_is_mid_send_stops_the_rest_to_that_address(
    bounce_env, bsettings, sink, runner, monkeypatch
):
    complainer = "r100@example.com"
    add_people(bsettings, [{"email": f"r{i:03}@example.com"} for i in range(100)])
    sent = send_welcome(bsettings, sink, complainer)  # the last id: the last batch
    monkeypatch.setattr(fanout, "BATCH", 25)
    real_dispatch, calls = queue.dispatch, []

    def complaint_after_first_batch(settings, ids):
        counts = real_dispatch(settings, ids)
        calls.append(ids)
        if len(calls) == 1:  # the first 25 are out; the complaint about the welcome arrives
            assert handle_message(bsettings, sample("yahoo-arf.eml", sent)).outcome == "complaint"
        return counts

    monkeypatch.setattr(queue, "dispatch", complaint_after_first_batch)
    result = runner.invoke(cli, ["broadcast", "send", str(ISSUE), "--at", "now",
                                 "--no-local-time", "--no-archive"], env=bounce_env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(calls) > 1
    to_complainer = [m for m in sink.to(complainer)]
    assert len(to_complainer) == 1  # the welcome email only, not the issue
    assert len(sink.messages) == 1 + 100


def test_a_complaint_mid_group_stops_the_email_already_claimed_for_that_address(
    bounce_env, bsettings, sink, runner, monkeypatch
):
    """The send-time re-check runs when a group of up to 25 is claimed; the complaint
    lands after that, while the group is on the wire. The last look before each email's
    SMTP transaction (its `handed` mark) still holds that one back."""
    add_people(bsettings, [{"email": f"r{i}@example.com"} for i in range(5)])
    complainer = send_welcome(bsettings, sink, "ana@example.com")  # last in the group
    real_deliver, delivered = sending._deliver, []

    def complaint_after_the_first_email(settings, job):
        real_deliver(settings, job)
        delivered.append(job.delivery.id)
        if len(delivered) == 1:  # the group is claimed and composed; the complaint arrives
            assert handle_message(bsettings, sample("yahoo-arf.eml", complainer)).suppressed

    monkeypatch.setattr(sending, "_deliver", complaint_after_the_first_email)
    result = runner.invoke(cli, ["broadcast", "send", str(ISSUE), "--at", "now",
                                 "--no-local-time", "--no-archive"], env=bounce_env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(sink.to(complainer.address)) == 1  # the welcome only, not the issue
    assert all(len(sink.to(f"r{i}@example.com")) == 1 for i in range(5))
    with session_scope(bsettings) as session:
        [(status, attempts, error)] = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.error).where(
                Delivery.kind == "broadcast", Delivery.id.not_in(delivered))
        ).all()  # fmt: skip
    assert (status, attempts) == ("skipped", 1)  # claimed with the group, then held back
    assert error == "address was suppressed after the email was claimed"


def test_receive_exits_as_a_pipe_transport_expects(bounce_env, bsettings, sink, runner):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    result = runner.invoke(cli, ["bounces", "receive"], env=bounce_env,
                           input=sample("exim-hard.eml", sent))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"hard bounce (delivery {sent.delivery_id}); address suppressed"
    )
    empty = runner.invoke(cli, ["bounces", "receive"], env=bounce_env, input=b"")
    assert empty.exit_code == 65 and "not an email message" in empty.output
    autoreply = b"From: ana@example.com\r\nSubject: Out of office\r\n\r\nBack Monday.\r\n"
    ignored = runner.invoke(cli, ["bounces", "receive"], env=bounce_env, input=autoreply)
    assert (ignored.exit_code, ignored.output.strip()) == (0, "not a bounce")


def test_receive_asks_the_mta_to_retry_when_the_database_is_down(bounce_env, bsettings, sink,
                                                                runner):  # fmt: skip
    sent = send_welcome(bsettings, sink, "ana@example.com")
    down = {**bounce_env, "NURTURE_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"}
    result = runner.invoke(cli, ["bounces", "receive"], env=down,
                           input=sample("exim-hard.eml", sent))  # fmt: skip
    assert result.exit_code == 75, result.output
    assert "cannot reach" in result.output and "Traceback" not in result.output


def test_stats_shows_rates_per_step_and_sequence_and_warns_on_complaints(
    bounce_env, bsettings, sink, runner
):
    ana = send_welcome(bsettings, sink, "ana@example.com")
    ben = send_welcome(bsettings, sink, "ben@example.com")
    send_welcome(bsettings, sink, "cara@example.com")
    handle_message(bsettings, sample("gmail-hard.eml", ana))
    handle_message(bsettings, sample("yahoo-arf.eml", ben))
    result = runner.invoke(cli, ["stats"], env=bounce_env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [step] = [ln for ln in lines if ln.strip().startswith("from-curious-to-customer/welcome ")]
    assert "sent       3" in step and "bounced     1 (33.33 %)" in step
    assert "complained     1 (33.33 %)" in step
    # the per-step table counts the same bounce, though the email's status stays "sent"
    welcome = next(ln for ln in lines if ln.strip().startswith("welcome ")).split()
    counts = dict(zip(COLUMNS, welcome[2:], strict=True))
    assert (counts["sent"], counts["failed"], counts["bounced"]) == ("3", "0", "1")
    assert any(ln.strip().startswith("from-curious-to-customer (sequence)") for ln in lines)
    assert ("warning: the complaint rate of the last 30 days is 33.33 % (1 of 3); Gmail wants "
            "it under 0.1 % and throttles at 0.3 %") in result.output  # fmt: skip


@pytest.mark.parametrize(("name", "value", "says"), [
    ("NURTURE_SOFT_BOUNCE_LIMIT", "1 in 30d", "at least 2"),
    ("NURTURE_SOFT_BOUNCE_LIMIT", "often", "such as '3 in 30d'"),
    ("NURTURE_BOUNCE_ADDRESS", "bounces+x@bounce.crumb.example", "without '+'"),
    ("NURTURE_BOUNCE_ADDRESS", "Bounces <b@crumb.example>", "plain address"),
    ("NURTURE_SES_TOPIC_ARNS", "ses-feedback", "SNS topic ARNs such as"),
    ("NURTURE_SES_TOPIC_ARNS", "arn:aws:sns:eu-west-1:123456789012:feedback, "
     "arn:aws:sqs:eu-west-1:123456789012:q", "got 'arn:aws:sqs"),
    ("NURTURE_SENDGRID_WEBHOOK_KEY", "not base64!", "the verification key SendGrid shows"),
])  # fmt: skip
def test_bounce_settings_are_checked_with_one_sentence(env, runner, name, value, says):
    result = runner.invoke(cli, ["bounces", "fetch", "--maildir", "."], env={**env, name: value})
    assert result.exit_code == 1 and name in result.output and says in result.output
    assert "Traceback" not in result.output


def test_a_soft_bounce_limit_of_two_in_a_week_is_honoured(env, sink):
    settings = load_settings(env["NURTURE_WORKSPACE"], env={
        **env, "NURTURE_BOUNCE_ADDRESS": BOUNCE_ADDRESS, "NURTURE_SOFT_BOUNCE_LIMIT": "2 in 7d"})  # fmt: skip
    sent = send_welcome(settings, sink, "ana@example.com")
    assert handle_message(settings, sample("yahoo-soft.eml", sent)).suppressed is False
    handled = handle_message(settings, sample("yahoo-soft.eml", sent))
    assert handled.suppressed is True
    assert _state(settings, "ana@example.com")[2] == "2 soft bounces in 7 days"
