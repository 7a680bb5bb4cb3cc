"""Newsletters end to end: an issue in Markdown reaches each subscriber in its segment
once, over real SMTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nurture import clock, queue
from nurture.broadcast import fanout
from nurture.cli import cli
from nurture.journeys.sameday import defer_for_broadcasts
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast, Delivery
from tests.conftest import POSTAL
from tests.helpers.broadcast import ISSUE, add_people, invoke, issue_file


def people_for_segments(settings) -> None:
    add_people(
        settings,
        [
            {"email": "ana@example.com", "first_name": "Ana"},
            {"email": "bo@example.com", "first_name": "Bo"},
            {"email": "churned@example.com"},
            {"email": "prospect@example.com"},
            {"email": "gone@example.com", "status": "unsubscribed"},
            {"email": "waiting@example.com", "status": "pending"},
            {"email": "bounced@example.com"},
        ],
        tags={"ana@example.com": ["customers"], "bo@example.com": ["customers"],
              "churned@example.com": ["customers", "churned"], "gone@example.com": ["customers"],
              "waiting@example.com": ["customers"], "bounced@example.com": ["customers"]},
        suppressed=["bounced@example.com"],
    )  # fmt: skip


def test_embedded_sending_uses_as_many_smtp_connections_as_allowed(runner, env, settings, sink):
    """Embedded mode sends from NURTURE_SMTP_CONCURRENCY threads, each over an SMTP
    connection of its own; each reader still gets the issue once."""
    emails = [f"reader{i}@example.com" for i in range(120)]  # five groups of 25
    add_people(settings, [{"email": e, "first_name": "Reader"} for e in emails])
    env["NURTURE_SMTP_CONCURRENCY"] = "3"
    result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", "now", "--no-local-time")
    assert "Broadcast #1: 120 emails, 120 sent" in result.output
    assert sorted(r for m in sink.messages for r in m.recipients) == sorted(emails)
    assert len(sink.handler.peers) == 3


def test_issue_reaches_each_active_subscriber_in_the_segment_once(runner, env, settings, sink):
    people_for_segments(settings)
    result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", "now", "--no-local-time",
                    "--segment", "tag:customers and not tag:churned")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Broadcast #1: 2 emails, 2 sent" in result.output
    assert sorted(r for m in sink.messages for r in m.recipients) == [
        "ana@example.com",
        "bo@example.com",
    ]
    msg = sink.to("ana@example.com")[0].message
    assert msg["Subject"] == "December: is it a marketing problem or a sales problem?"
    assert msg["List-Unsubscribe"].startswith("<https://crumb.example/unsubscribe/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"].endswith("<newsletter.crumb.example>")
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "Hi Ana," in html and "Hi Ana," in text
    assert "<table" in html and "<h1" in html  # Markdown rendered, in the email layout
    assert "| The job |" in text  # the text part is the Markdown itself
    assert escape(POSTAL) in html and POSTAL in text
    web = "https://crumb.example/archive/2026-12-monthly"
    assert f"View this email in your browser: {web}" in text
    assert "https://crumb.example/c/" in html  # links tracked as in sequence emails
    # the same file again is refused: nobody gets the issue twice by mistake
    again = runner.invoke(cli, ["broadcast", "send", str(ISSUE), "--at", "now", "--no-local-time"],
                          env=env)  # fmt: skip
    assert again.exit_code == 1
    assert "already sent as broadcast #1" in again.output
    status = invoke(runner, env, "broadcast", "status", "1")
    assert "state:    sent" in status.output
    assert "2 sent (2 in all)" in status.output


def test_test_copy_is_marked_recorded_and_not_counted(runner, env, settings, sink):
    ids = add_people(settings, [{"email": "maya@crumb.example", "first_name": "Maya"},
                                {"email": "ana@example.com", "first_name": "Ana"}])  # fmt: skip
    result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--test-to", "maya@crumb.example")
    assert result.exit_code == 0, result.output
    assert "Test copy of draft #1 sent to maya@crumb.example" in result.output
    [received] = sink.messages
    assert received.recipients == ["maya@crumb.example"]
    assert (
        received.message["Subject"]
        == "[TEST] December: is it a marketing problem or a sales problem?"
    )
    with session_scope(settings) as session:
        [test] = session.scalars(select(Delivery)).all()
        assert (test.is_test, test.status, test.subscriber_id) == (
            True,
            "sent",
            ids["maya@crumb.example"],
        )
        assert session.get(Broadcast, 1).state == "draft"
    status = invoke(runner, env, "broadcast", "status", "1")
    assert "emails:   none yet" in status.output
    assert "test copy to maya@crumb.example: sent" in status.output
    # the real send still reaches the tester: a test copy is outside the one-per-person rule
    result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", "now", "--no-local-time")
    assert result.exit_code == 0, result.output
    assert sorted(r for m in sink.messages[1:] for r in m.recipients) == [
        "ana@example.com",
        "maya@crumb.example",
    ]
    assert "[TEST]" not in sink.to("ana@example.com")[0].message["Subject"]
    listing = invoke(runner, env, "broadcast", "list")
    assert "   1  sent" in listing.output and "2/2" in listing.output


def test_test_copy_needs_a_subscriber(runner, env, settings, sink):
    result = runner.invoke(
        cli, ["broadcast", "send", str(ISSUE), "--test-to", "x@example.com"], env=env
    )
    assert result.exit_code == 1
    assert "x@example.com is not a subscriber" in result.output
    assert "nurture subscribers add x@example.com --confirmed" in result.output
    assert sink.messages == []


def test_dry_run_prints_audience_and_sample_and_saves_nothing(runner, env, settings, sink):
    people_for_segments(settings)
    with clock.frozen_at(datetime(2026, 12, 1, tzinfo=UTC)):  # before the issue's send_at
        result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--dry-run",
                        "--segment", "tag:customers and not tag:churned")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Audience: 2 subscribers" in result.output
    assert "Sample:   ana@example.com, bo@example.com" in result.output
    assert "Send at:  Tue 2026-12-08 09:00 in each reader's zone" in result.output
    everyone = invoke(runner, env, "broadcast", "send", str(ISSUE), "--dry-run", "--at", "now",
                      "--no-local-time")  # fmt: skip
    assert "Audience: 4 subscribers" in everyone.output  # active and not suppressed
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Broadcast)) == 0
    assert sink.messages == []


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("tags:customers", "unknown term 'tags' at position 1 (did you mean 'tag'?)"),
        ("tag:customers and (ready or", "expected a term but found the end at position 28"),
        (
            "in:nowhere",
            "no sequence named 'nowhere' at position 1 (known: from-curious-to-customer, win-back)",
        ),
    ],
)
def test_bad_segment_is_explained_where_it_goes_wrong(runner, env, segment, expected):
    result = runner.invoke(
        cli, ["broadcast", "send", str(ISSUE), "--dry-run", "--segment", segment], env=env
    )
    assert result.exit_code == 1
    assert expected in result.output
    assert f"  {segment}\n" in result.output
    assert "Traceback" not in result.output


def test_front_matter_mistakes_point_at_the_line(runner, env, tmp_path):
    path = issue_file(tmp_path, 'subject: "Hello"\nsegmnet: ready')
    result = runner.invoke(cli, ["broadcast", "send", str(path), "--dry-run"], env=env)
    assert result.exit_code == 1
    assert f"{path}:3: unknown key 'segmnet' (did you mean 'segment'?)" in result.output
    path = issue_file(tmp_path, 'subject: "Hello"', "\nHi {{ subscriber.first_name\n")
    result = runner.invoke(cli, ["broadcast", "send", str(path), "--dry-run"], env=env)
    assert result.exit_code == 1
    assert f"{path}:5: unexpected end of template" in result.output
    path = issue_file(tmp_path, "archive: true")
    result = runner.invoke(cli, ["broadcast", "send", str(path), "--dry-run"], env=env)
    assert "the issue has no subject (add 'subject:' to the front matter)" in result.output


def test_template_source_with_subject_from_the_command_line(runner, env, settings, sink):
    add_people(settings, [{"email": "ana@example.com", "first_name": "Ana"}])
    result = invoke(runner, env, "broadcast", "send", "curious-to-customer/welcome",
                    "--subject", "Our welcome letter, {{ subscriber.first_name }}")  # fmt: skip
    assert result.exit_code == 0, result.output
    msg = sink.to("ana@example.com")[0].message
    assert msg["Subject"] == "Our welcome letter, Ana"
    assert "Two jobs that look like one" in msg.get_body(("html",)).get_content()


def test_scheduled_broadcast_goes_at_send_due_and_cancel_stops_the_rest(
    runner, env, settings, sink
):
    add_people(settings, [{"email": f"r{i}@example.com"} for i in range(5)])
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M+00:00")
    result = invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", later, "--no-archive",
                    "--no-local-time")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Broadcast #1 scheduled for" in result.output and "to 5 subscribers" in result.output
    assert invoke(runner, env, "send-due").output.startswith("send-due: 0 due")  # not yet
    assert sink.messages == []
    with clock.frozen_at(datetime.now(UTC) + timedelta(hours=3)):
        result = invoke(runner, env, "send-due")
    assert "5 broadcast" in result.output and len(sink.messages) == 5
    with session_scope(settings) as session:
        row = session.get(Broadcast, 1)
        assert row.state == "sent" and row.checkpoint > 0
        assert row.slug.startswith("2026-12-monthly-") and len(row.slug) > len("2026-12-monthly-")
    # a second scheduled issue, cancelled before its time, sends nothing
    other = issue_file(Path(settings.workspace), 'subject: "Second"')
    result = invoke(runner, env, "broadcast", "send", str(other), "--at", later)
    assert result.exit_code == 0, result.output
    result = invoke(runner, env, "broadcast", "cancel", "2")
    assert "Broadcast #2 cancelled" in result.output
    with clock.frozen_at(datetime.now(UTC) + timedelta(hours=3)):
        invoke(runner, env, "send-due")
    assert len(sink.messages) == 5


def test_a_fan_out_stopped_halfway_resumes_after_its_checkpoint(runner, env, settings, sink,
                                                              monkeypatch):  # fmt: skip
    add_people(settings, [{"email": f"r{i:03}@example.com"} for i in range(120)])
    monkeypatch.setattr(fanout, "BATCH", 25)
    calls = []

    class Crash(Exception):
        pass

    def crash_on_third(settings, ids):  # the process dies after committing batch 3
        calls.append(ids)
        if len(calls) == 3:
            raise Crash
        return real_dispatch(settings, ids)

    real_dispatch = queue.dispatch
    monkeypatch.setattr(queue, "dispatch", crash_on_third)
    with pytest.raises(Crash):
        runner.invoke(cli, ["broadcast", "send", str(ISSUE), "--at", "now", "--no-local-time"],
                      env=env, catch_exceptions=False)  # fmt: skip
    assert len(sink.messages) == 50
    with session_scope(settings) as session:
        assert session.get(Broadcast, 1).checkpoint == 75  # batch 3 is written, not sent
    monkeypatch.setattr(queue, "dispatch", real_dispatch)
    result = invoke(runner, env, "send-due")  # cron, a minute later: the rest of the fan-out
    assert "45 broadcast" in result.output
    assert len(sink.messages) == 95
    # batch 3's deliveries were written but never enqueued: send-due recovers them
    with clock.frozen_at(datetime.now(UTC) + timedelta(hours=1)):
        result = invoke(runner, env, "send-due")
    assert result.exit_code == 0, result.output
    received = sorted(r for m in sink.messages for r in m.recipients)
    assert received == [f"r{i:03}@example.com" for i in range(120)]


def test_a_sequence_step_on_a_broadcast_day_waits_a_day(settings):
    ids = add_people(settings, [{"email": "ana@example.com", "timezone": "Europe/Paris"},
                                {"email": "bo@example.com"}],
                     tags={"ana@example.com": ["customers"]})  # fmt: skip
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with session_scope(settings) as session:
        session.add(Broadcast(slug="dec", source="dec.md", subject="Dec", body_html="x",
                              segment="tag:customers", state="scheduled",
                              send_at=datetime(2026, 12, 7, 19, 0, tzinfo=UTC),
                              local_at="2026-12-08T09:00", archive=False, checkpoint=0,
                              created_at=now))  # fmt: skip
    step_due = datetime(2026, 12, 8, 15, 30, tzinfo=UTC)  # 16:30 in Paris, the broadcast's day
    with session_scope(settings) as session:
        moved = defer_for_broadcasts(
            session, settings, ids["ana@example.com"], "Europe/Paris", step_due
        )
        kept = defer_for_broadcasts(session, settings, ids["bo@example.com"], None, step_due)
        day_before = defer_for_broadcasts(session, settings, ids["ana@example.com"], "Europe/Paris",
                                          step_due - timedelta(days=1))  # fmt: skip
    assert moved == step_due + timedelta(days=1)
    assert kept == step_due  # not in the segment: no broadcast that day
    assert day_before == step_due - timedelta(days=1)
    # once written, the delivery itself decides the day
    with session_scope(settings) as session:
        session.add(Delivery(subscriber_id=ids["bo@example.com"], broadcast_id=1, kind="broadcast",
                             status="sent", sent_at=datetime(2026, 12, 9, 9, 0, tzinfo=UTC),
                             created_at=now))  # fmt: skip
    with session_scope(settings) as session:
        later = defer_for_broadcasts(session, settings, ids["bo@example.com"], None,
                                     datetime(2026, 12, 9, 7, 0, tzinfo=UTC))  # fmt: skip
    assert later == datetime(2026, 12, 10, 7, 0, tzinfo=UTC)
