"""Readiness scores from real opens and clicks: once per email, live wherever shown."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from freezegun import freeze_time
from sqlalchemy import func, select

from nurture.cli import cli
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Event, Handoff
from nurture.web import create_app
from tests.helpers.journeys import BROWSER, REAL_TIME_MODULES, run_cron
from tests.helpers.webhook import webhook_receiver

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def invoke(runner, env, *args) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def tracked(received) -> tuple[str, str]:
    """The open pixel and the first tracked link of an email the sink received."""
    html = received.message.get_body(("html",)).get_content()
    pixel = re.search(r'src="https://crumb\.example(/o/[^"]+)"', html).group(1)
    link = re.search(r'href="https://crumb\.example(/c/[^"]+)"', html).group(1)
    return pixel, link


def visit(client, path: str) -> None:
    answer = client.get(path, headers={"User-Agent": BROWSER})
    assert answer.status_code in (200, 302)


def test_repeated_opens_and_clicks_of_one_email_count_once(runner, env, sink, settings):
    """3 opens and 2 clicks of one email are 1 open and 1 click (4 points, not 9): no
    sales handoff. A click on a second email (7 points) makes the reader ready, once."""
    with webhook_receiver() as (url, hooks):
        env = {**env, "NURTURE_SALES_WEBHOOK_URL": url}
        settings = load_settings(env["NURTURE_WORKSPACE"], env=env)
        client = create_app(settings).test_client()
        with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
            invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
            invoke(runner, env, "send-due")
            [welcome] = sink.to("ana@example.com")
            pixel, link = tracked(welcome)
            for path in (pixel, pixel, link, pixel, link):
                visit(client, path)
            invoke(runner, env, "send-due")  # would deliver a handoff, were there one

            with session_scope(settings) as session:  # one open and one click a minute
                assert session.scalar(select(func.count()).select_from(Event)) == 2
                assert session.scalar(select(func.count()).select_from(Handoff)) == 0
            assert hooks == []
            assert json.loads(invoke(runner, env, "leads", "--format", "json")) == []
            out = invoke(runner, env, "subscribers", "show", "ana@example.com")
            assert "score: 4 (not yet ready)" in out
            stats = invoke(runner, env, "stats")
            assert re.search(r"welcome\s+education\s+1\s+(0\s+){4}1\s+1\s", stats), stats
            assert "scores now: 1 in it, median 4, 0 at or above 6 (ready)" in stats

            # the second email, clicked twice: ready at 1 + 3 + 3 = 7, told once
            run_cron(runner, env, frozen, START + timedelta(days=3))
            second = sink.to("ana@example.com")[1]
            pixel2, link2 = tracked(second)
            visit(client, link2)
            visit(client, link2)
            invoke(runner, env, "send-due")
            assert len(hooks) == 1 and hooks[0]["score"] == 7
            visit(client, pixel2)  # the score goes on living after the handoff
            invoke(runner, env, "send-due")
    assert len(hooks) == 1
    [lead] = json.loads(invoke(runner, env, "leads", "--format", "json"))
    assert lead["score"] == 8 and lead["clicked"] == ["know-your-audience", "welcome"]
    out = invoke(runner, env, "subscribers", "show", "ana@example.com")
    assert "score: 8 (sales-ready since" in out


def test_the_score_shown_is_live_after_one_click(runner, env, sink, settings, tmp_path):
    """A tracked click worth 3 points shows as 3 at once, before anyone is ready."""
    client = create_app(settings).test_client()
    with freeze_time(START, ignore=REAL_TIME_MODULES):
        invoke(runner, env, "subscribers", "add", "ben@example.com", "--confirmed")
        invoke(runner, env, "send-due")
        _, link = tracked(sink.to("ben@example.com")[0])
        visit(client, link)
    out = invoke(runner, env, "subscribers", "show", "ben@example.com")
    assert "score: 3 (not yet ready)" in out
    stats = invoke(runner, env, "stats")
    assert "scores now: 1 in it, median 3, 0 at or above 6 (ready)" in stats
    invoke(runner, env, "stats", "--html", str(tmp_path / "report.html"))
    report = (tmp_path / "report.html").read_text()
    assert "scores now: 1 in it, median 3, 0 at or above 6 (ready)" in report
