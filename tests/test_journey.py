"""One subscriber through the whole example sequence, on time, once, over real SMTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from freezegun import freeze_time

from nurture.cli import cli
from nurture.content.sequences import load_catalog
from nurture.journeys.windows import next_opening
from nurture.web import create_app
from tests.helpers.journeys import BROWSER, REAL_TIME_MODULES, run_cron

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
#: How late a step may arrive after its due time (cron every half hour, in production).
TICK = timedelta(minutes=30)


def click_first_link(client, received) -> None:
    """Click the first tracked link of an email, as its reader would."""
    html = received.message.get_body(("html",)).get_content()
    url = re.search(r'href="(https://crumb\.example/c/[^"]+)"', html).group(1)
    answer = client.get(url.removeprefix("https://crumb.example"), headers={"User-Agent": BROWSER})
    assert answer.status_code == 302


def test_whole_sequence_arrives_once_in_order_on_time(runner, env, sink, workspace, settings):
    """An engaged reader (two clicks) gets the education emails, then the sales prompts."""
    seq = load_catalog(workspace / "sequences").sequences["from-curious-to-customer"]
    main_path = [s for s in seq.steps if s.when is None or s.when.ready]
    length = sum((step.after for step in main_path), timedelta(0))
    client = create_app(settings).test_client()

    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        result = runner.invoke(
            cli, ["subscribers", "add", "ana@example.com", "--first-name", "Ana", "--confirmed"],
            env=env,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        # cron at each due time for the whole length of the sequence, plus two weeks
        arrivals: list[datetime] = []

        def engage(now: datetime) -> None:
            new = len(sink.messages) - len(arrivals)
            arrivals.extend([now] * new)
            if new and len(arrivals) <= 2:
                click_first_link(client, sink.messages[-1])  # engaged with the first two

        runs = run_cron(runner, env, frozen, START + length + timedelta(days=14), each=engage)
    # one run per email and gate, not one per half hour (about 2,000 over these weeks)
    assert runs < 30

    received = sink.to("ana@example.com")
    assert len(received) == len(main_path) == 9
    subjects = [m.message["Subject"] for m in received]
    assert subjects[0] == "Welcome, Ana: marketing and sales are two jobs"
    assert subjects[-1] == "Want a second pair of eyes on this, Ana?"
    assert len(set(subjects)) == 9, "a step arrived twice"
    # each step within one cron interval of its due time: its delay after the previous
    # send, moved to the next opening of the weekday send window when it falls outside
    assert arrivals[0] == START
    for previous, got, step in zip(arrivals[:-1], arrivals[1:], main_path[1:], strict=True):
        due = next_opening(previous + step.after, seq.send_window, ZoneInfo("UTC"))
        assert due <= got < due + TICK, step.id
    stages = [s.stage for s in main_path]
    assert stages == ["education"] * 6 + ["sales"] * 3

    list_ids = [m.message["List-Id"] for m in received]
    assert all("from-curious-to-customer" in s for s in list_ids)
    for m in received:
        msg = m.message
        assert msg.get_content_type() == "multipart/alternative"
        parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
        assert set(parts) == {"text/plain", "text/html"}
        unsub = msg["List-Unsubscribe"]
        assert unsub.startswith("<https://crumb.example/unsubscribe/") and unsub.endswith(">")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Message-ID"].endswith("@crumb.example>")
        assert msg["Date"]
        url = unsub[1:-1]
        assert url in parts["text/html"] and url in parts["text/plain"]
        assert "12 Mill Lane" in parts["text/html"] and "12 Mill Lane" in parts["text/plain"]
        assert "<style" not in parts["text/html"], "CSS should be inlined"
        assert "Ana" in parts["text/plain"]
