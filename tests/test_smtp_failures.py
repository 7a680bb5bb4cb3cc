"""What a failing SMTP server does to the embedded `send-due`: retry later, or give up and
suppress, and never lose the email or send it twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time
from sqlalchemy import select

from nurture.cli import cli
from nurture.people.subscribers import is_suppressed
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Subscriber
from tests.helpers.journeys import REAL_TIME_MODULES
from tests.services import free_port

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def add(runner, env, *emails):
    for email in emails:
        result = runner.invoke(cli, ["subscribers", "add", email, "--confirmed"], env=env)
        assert result.exit_code == 0, result.output


def send_due(runner, env) -> str:
    result = runner.invoke(cli, ["send-due"], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_temporary_failure_is_retried_later_and_delivered_once(runner, env, sink, settings):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        add(runner, env, "ana@example.com")
        sink.handler.refuse["*"] = (451, "4.3.0 Try again later")
        assert send_due(runner, env) == "send-due: 1 due, 1 retry"
        assert sink.messages == []

        sink.handler.refuse.clear()
        assert send_due(runner, env) == "send-due: 0 due"  # backing off, not hammering
        frozen.tick(timedelta(minutes=3))
        assert send_due(runner, env) == "send-due: 0 due, 1 retried or recovered, 1 sent"
        frozen.tick(timedelta(minutes=3))
        assert send_due(runner, env) == "send-due: 0 due"

    assert len(sink.to("ana@example.com")) == 1
    with session_scope(settings) as session:
        delivery = session.scalar(select(Delivery).where(Delivery.kind == "sequence"))
        assert (delivery.status, delivery.attempts) == ("sent", 2)


def test_permanent_failure_suppresses_only_that_address(runner, env, sink, settings):
    add(runner, env, "gone@example.com", "here@example.com")
    sink.handler.refuse["gone@example.com"] = (550, "5.1.1 No such user")
    assert send_due(runner, env) == "send-due: 2 due, 1 sent, 1 failed"
    assert [m.recipients for m in sink.messages] == [["here@example.com"]]

    with session_scope(settings) as session:
        gone = session.scalar(select(Subscriber).where(Subscriber.email == "gone@example.com"))
        assert gone.status == "bounced"
        assert is_suppressed(session, "gone@example.com")
        failed = session.scalar(select(Delivery).where(Delivery.subscriber_id == gone.id))
        assert failed.status == "failed" and "550" in failed.error
    result = runner.invoke(cli, ["subscribers", "show", "gone@example.com"], env=env)
    assert "exited     ended" in result.output
    assert ": address bounced (SMTP 550: 5.1.1 No such user)" in result.output
    assert "failed    from-curious-to-customer/welcome" in result.output
    # stats counts the refusal as a bounce in the per-step table and in the rates alike
    stats = runner.invoke(cli, ["stats"], env=env).output.splitlines()
    welcome = next(ln for ln in stats if ln.strip().startswith("welcome ")).split()
    assert (welcome[2], welcome[4], welcome[-1]) == ("1", "1", "1")  # sent, failed, bounced
    [rate] = [ln for ln in stats if ln.strip().startswith("from-curious-to-customer/welcome ")]
    assert "bounced     1" in rate


def test_unreachable_server_leaves_everything_for_a_later_run(runner, env, sink, settings):
    add(runner, env, "ana@example.com", "bo@example.com")
    down = {**env, "NURTURE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    assert send_due(runner, down) == "send-due: 2 due, 2 retry"
    with session_scope(settings) as session:
        errors = session.scalars(select(Delivery.error)).all()
    assert all("cannot reach SMTP server" in e for e in errors)

    with freeze_time(datetime.now(UTC) + timedelta(minutes=5), ignore=REAL_TIME_MODULES):
        assert send_due(runner, env) == "send-due: 0 due, 2 retried or recovered, 2 sent"
    assert sorted(r for m in sink.messages for r in m.recipients) == [
        "ana@example.com", "bo@example.com",
    ]  # fmt: skip
