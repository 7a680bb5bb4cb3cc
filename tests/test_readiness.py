"""From education to sales: gates, goals, send windows, the daily cap and the handoff,
with real SMTP and time travel."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from nurture.cli import cli
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Handoff
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
NY = ZoneInfo("America/New_York")


def invoke(runner, env, *args):
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def subjects(sink, email):
    return [m.message["Subject"] for m in sink.to(email)]


def test_quiet_reader_gets_the_extra_education_branch_after_the_gate(runner, env, sink):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "quiet@example.com", "--confirmed")
        run_cron(runner, env, frozen, START + timedelta(days=22))
        out = invoke(runner, env, "subscribers", "show", "quiet@example.com")
        assert "(waiting at the gate: needs ready, score 0 of 6)" in out
        run_cron(runner, env, frozen, START + timedelta(days=40))
    got = subjects(sink, "quiet@example.com")
    assert len(got) == 8
    assert got[-2:] == ["Three small shops that got known on a shoestring",
                        "One small marketing habit for the month ahead"]  # fmt: skip
    assert not any("second pair of eyes" in s or "full carts" in s for s in got)
    out = invoke(runner, env, "subscribers", "show", "quiet@example.com")
    assert "gate timed out after 1w (needs ready, score 0 of 6): on to more-stories" in out


def test_engaged_reader_gets_the_sales_prompts_and_sales_gets_one_signed_handoff(
    runner, env, sink, settings
):
    received: list[tuple[dict, str, str]] = []
    failures = {"left": 2}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures["left"]:
                failures["left"] -= 1
                self.send_response(503)
                self.end_headers()
                return
            received.append((json.loads(body), self.headers["X-Nurture-Signature"],
                             self.headers["X-Nurture-Timestamp"] + "." + body.decode()))  # fmt: skip
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**env, "NURTURE_SALES_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/leads",
           "NURTURE_SALES_WEBHOOK_SECRET": "s3cret"}  # fmt: skip
    try:
        with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
            invoke(runner, env, "subscribers", "add", "keen@example.com", "--confirmed")
            invoke(runner, env, "send-due")
            frozen.tick(timedelta(days=1))
            invoke(runner, env, "events", "add", "keen@example.com", "pricing_viewed")
            run_cron(runner, env, frozen, START + timedelta(days=40))
    finally:
        server.shutdown()

    got = subjects(sink, "keen@example.com")
    assert len(got) == 9 and got[-1] == "Want a second pair of eyes on this, friend?"
    assert "300 full carts, 30 orders: where did the rest go?" in got
    assert not any("shoestring" in s for s in got)
    # exactly one accepted handoff, after two refusals, correctly signed
    assert len(received) == 1
    payload, signature, signed = received[0]
    assert payload["subscriber"]["email"] == "keen@example.com"
    assert payload["event"] == "sales_ready" and payload["score"] == 10
    assert payload["evidence"]["events"] == ["pricing_viewed"]
    expected = hmac.new(b"s3cret", signed.encode(), hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    with session_scope(settings) as session:
        handoff = session.scalar(select(Handoff))
        assert (handoff.status, handoff.attempts) == ("delivered", 3)
    leads = invoke(runner, env, "leads", "--format", "json")
    [lead] = json.loads(leads)
    assert lead["email"] == "keen@example.com" and lead["score"] == 10


def test_goal_event_stops_everything_queued(runner, env, sink, settings):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "booked@example.com", "--confirmed")
        invoke(runner, env, "send-due")
        frozen.tick(timedelta(days=2))
        # the second email is claimed and queued (as a worker would find it) ...
        from nurture import clock
        from nurture.content.sequences import catalog_for
        from nurture.journeys.scheduling import claim_due

        with session_scope(settings) as session:
            [queued] = claim_due(session, catalog_for(settings.sequences_dir), clock.now())
        # ... when the subscriber books a demo
        invoke(runner, env, "events", "add", "booked@example.com", "demo_booked")
        run_cron(runner, env, frozen, START + timedelta(days=40))
    assert len(sink.to("booked@example.com")) == 1
    with session_scope(settings) as session:
        assert session.get(Delivery, queued).status == "cancelled"
    out = invoke(runner, env, "subscribers", "show", "booked@example.com")
    assert "goal reached: event demo_booked" in out


WINDOWED = """
    name: weekday-tips
    trigger: signup
    send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
    steps:
"""


@pytest.mark.parametrize("start", [datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
                                   datetime(2026, 10, 29, 3, 0, tzinfo=UTC)],
                         ids=["march-dst", "november-dst"])  # fmt: skip
def test_new_york_weekday_window_holds_across_dst(runner, env, sink, workspace, start):
    steps = "".join(
        f"      - {{id: tip{i}, after: 1d, subject: 'Tip {i}', "
        f"template: curious-to-customer/welcome}}\n"
        for i in range(8)
    )
    (workspace / "sequences" / "from-curious-to-customer.yaml").unlink()
    (workspace / "sequences" / "weekday-tips.yaml").write_text(textwrap.dedent(WINDOWED) + steps)
    with freeze_time(start, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "ny@example.com", "--confirmed",
               "--timezone", "America/New_York")  # fmt: skip
        frozen.tick(timedelta(days=1))  # tip0 falls due at 22:00 or 23:00 in New York
        invoke(runner, env, "send-due")
        out = invoke(runner, env, "subscribers", "show", "ny@example.com")
        assert "next: tip0 at" in out and "(outside the send window)" in out
        run_cron(runner, env, frozen, start + timedelta(days=16))
    received = sink.to("ny@example.com")
    assert len(received) == 8
    days = set()
    for m in received:
        local = parsedate_to_datetime(m.message["Date"]).astimezone(NY)
        assert local.weekday() < 5 and 9 <= local.hour < 17, local
        days.add(local.date())
    assert len(days) == 8, "never two emails on one day"


def test_never_two_sequence_emails_in_one_day(runner, env, sink, workspace):
    (workspace / "sequences" / "second.yaml").write_text(textwrap.dedent("""
        name: second
        trigger: signup
        steps:
          - {id: hello, after: 0m, subject: "Hello again", template: curious-to-customer/welcome}
          - {id: more, after: 1h, subject: "More", template: curious-to-customer/welcome}
    """))  # fmt: skip
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "busy@example.com", "--confirmed",
               "--timezone", "Europe/Paris")  # fmt: skip
        run_cron(runner, env, frozen, START + timedelta(days=6))
    dates = Counter(
        parsedate_to_datetime(m.message["Date"]).astimezone(ZoneInfo("Europe/Paris")).date()
        for m in sink.to("busy@example.com")
    )
    assert dates and max(dates.values()) == 1
    assert sum(dates.values()) >= 4  # both sequences progress, one email a day


def test_on_a_newsletter_day_the_sequence_step_waits_a_day(runner, env, sink):
    """The broadcast wins: the step due on its day goes out the next day instead."""
    root = __import__("pathlib").Path(__file__).parent.parent
    issue = root / "newsletters" / "2026-12-monthly.md"
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "reader@example.com", "--confirmed")
        invoke(runner, env, "send-due")  # welcome, Monday 08:00
        frozen.tick(timedelta(days=2) - timedelta(hours=1))  # Wednesday 07:00
        invoke(runner, env, "broadcast", "send", str(issue), "--at", "now", "--no-local-time")
        invoke(runner, env, "send-due")  # the newsletter goes out
        frozen.tick(timedelta(hours=1))  # Wednesday 08:00: the second step is due
        invoke(runner, env, "send-due")
        out = invoke(runner, env, "subscribers", "show", "reader@example.com")
        assert "next: know-your-audience at" in out and "(a newsletter goes out that day)" in out
        run_cron(runner, env, frozen, START + timedelta(days=4))
    dates = [(m.message["Subject"], parsedate_to_datetime(m.message["Date"]).date())
             for m in sink.to("reader@example.com")]  # fmt: skip
    newsletter_day = next(d for s, d in dates if s.startswith("December"))
    second = next(d for s, d in dates if s == "Who is your business really for?")
    assert newsletter_day == (START + timedelta(days=2)).date()
    assert second == newsletter_day + timedelta(days=1)
