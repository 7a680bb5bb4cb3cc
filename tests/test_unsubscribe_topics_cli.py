"""`nurture unsubscribe --topic/--pause`: what an operator does for a reader who phones
in, as the preference centre would; the emails that then arrive, and what `show` says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from nurture.cli import cli
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron
from tests.helpers.topics import issue, subjects, with_topics

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def topical(workspace):
    return with_topics(workspace)


def run(runner, env, *args: str):
    return runner.invoke(cli, list(args), env=env)


def test_an_operator_leaves_a_topic_or_pauses_for_a_reader(runner, env, sink, tmp_path):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        for who in ("ana", "bo", "cy"):
            run(runner, env, "subscribers", "add", f"{who}@example.com", "--confirmed")
        run(runner, env, "send-due")
        left = run(runner, env, "unsubscribe", "ana@example.com", "--topic", "tips")
        assert left.exit_code == 0, left.output
        assert left.output == "ana@example.com left the topic 'tips'.\n"
        again = run(runner, env, "unsubscribe", "ana@example.com", "--topic", "tips")
        assert again.output == "ana@example.com had already left the topic 'tips'.\n"
        paused = run(runner, env, "unsubscribe", "bo@example.com", "--pause", "30d")
        assert paused.output == "Paused bo@example.com until 2026-04-01 08:00 UTC.\n"
        bo = run(runner, env, "subscribers", "show", "bo@example.com").output
        assert "paused until 2026-04-01 08:00 UTC" in bo
        one = run(runner, env, "unsubscribe", "cy@example.com", "--sequence", "tips")
        assert one.output == (
            "Unsubscribed cy@example.com from tips.\n"
            "They stay in the topic 'tips': its newsletters and other sequences still reach "
            "them. To leave it: nurture unsubscribe cy@example.com --topic tips\n"
        )
        run(runner, env, "broadcast", "send", str(issue(tmp_path, "Tips special", "tips")))
        run(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
        run_cron(runner, env, frozen, START + timedelta(days=10))

    assert subjects(sink, "ana@example.com") == ["Tip one", "December"]
    assert subjects(sink, "bo@example.com") == ["Tip one"]
    assert sorted(subjects(sink, "cy@example.com")) == ["December", "Tip one", "Tips special"]
    shown = run(runner, env, "subscribers", "show", "ana@example.com").output
    assert "withdrawn  via cli" in shown and "topics: tips" in shown
    assert "topics left: tips" in shown


@pytest.mark.parametrize(("args", "says"), [
    (["--topic", "tipz"], "Error: unknown topic 'tipz' (did you mean 'tips'?); see docs/topics.md"),
    (["--pause", "soon"], "Error: --pause: bad duration 'soon': write a number and a unit"),
    (["--pause", "0d"], "Error: --pause: give a duration longer than zero, like 30d"),
    (["--topic", "tips", "--sequence", "tips"],
     "Error: give --sequence alone, or --topic/--pause without it"),
])  # fmt: skip
def test_a_bad_topic_or_pause_is_refused_and_changes_nothing(runner, env, args, says):
    run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    result = run(runner, env, "unsubscribe", "ana@example.com", *args)
    assert result.exit_code == 1 and says in result.output, result.output
    shown = run(runner, env, "subscribers", "show", "ana@example.com").output
    assert shown.startswith("ana@example.com  active") and "preferences:" not in shown


def test_a_reader_who_left_cannot_be_paused(runner, env):
    run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    run(runner, env, "unsubscribe", "ana@example.com")
    result = run(runner, env, "unsubscribe", "ana@example.com", "--pause", "30d")
    assert result.exit_code == 1
    assert "ana@example.com is unsubscribed: no email reaches them already" in result.output


def test_a_dry_run_says_how_many_readers_their_choices_leave_out(runner, env, tmp_path):
    for who in ("ana", "bo", "cy"):
        run(runner, env, "subscribers", "add", f"{who}@example.com", "--confirmed")
    tips = str(issue(tmp_path, "Tips special", "tips"))
    before = run(runner, env, "broadcast", "send", tips, "--dry-run")
    assert "Audience: 3 subscribers (active, not suppressed)\n" in before.output
    run(runner, env, "unsubscribe", "ana@example.com", "--topic", "tips")
    run(runner, env, "unsubscribe", "bo@example.com", "--pause", "30d")
    after = run(runner, env, "broadcast", "send", tips, "--dry-run")
    assert after.exit_code == 0, after.output
    assert ("Audience: 1 subscribers (active, not suppressed); left out: 1 left the topic, "
            "1 paused\n") in after.output  # fmt: skip
    news = run(runner, env, "broadcast", "send", str(issue(tmp_path, "December")), "--dry-run")
    assert (
        "Audience: 2 subscribers (active, not suppressed); left out: 0 left the topic, "
        "1 paused\n" in news.output
    )
