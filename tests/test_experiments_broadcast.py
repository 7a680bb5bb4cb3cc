"""A newsletter's variants on SQLite and PostgreSQL: a test share first, then the winner
to the rest after the set time (picked by `send-due`), or chosen by hand."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from nurture.cli import cli
from nurture.web import create_app
from tests.helpers.broadcast import add_people, invoke, issue_file
from tests.helpers.experiments import received_variants, subject_variant, tracking_paths
from tests.helpers.journeys import BROWSER, REAL_TIME_MODULES

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FRONT = """\
subject: "News A"
preheader: "What is new at the bakery."
variants:
  - {name: A}
  - {name: B, subject: "News B"}
goal: {event: purchased}"""
BODY = "Hi {{ subscriber.first_name or 'there' }}, [read the story](https://crumb.example/story)\n"
READERS = [f"reader{i}@example.com" for i in range(40)]


def test_the_test_share_gets_the_variants_then_the_rest_gets_the_winner(runner, env, settings,
                                                                       sink, tmp_path):  # fmt: skip
    add_people(settings, [{"email": e} for e in READERS])
    issue = issue_file(tmp_path, FRONT, BODY)
    client = create_app(settings).test_client()
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        out = invoke(runner, env, "broadcast", "send", str(issue), "--test-share", "50%",
                     "--pick-after", "4h", "--by", "clicks").output  # fmt: skip
        tested = received_variants(sink)
        assert len(tested) == 20  # half, give or take, by the hash of each address
        assert ("Broadcast #1: 20 emails, 20 sent to the 50% test share; the winner by clicks "
                "goes to the rest at the first `nurture send-due` after Mon 2026-03-02 12:00 "
                "UTC.") in out  # fmt: skip
        assert sorted(set(tested.values())) == ["A", "B"]
        a = [m for m in sink.messages if subject_variant(m) == "A"]
        b = [m for m in sink.messages if subject_variant(m) == "B"]
        for received in a[:1] + b[:3]:
            client.get(tracking_paths(received)[1], headers={"User-Agent": BROWSER})

        frozen.tick(timedelta(hours=3, minutes=59))
        invoke(runner, env, "send-due")
        assert len(sink.messages) == 20, "the rest waits for the winner"
        status = invoke(runner, env, "broadcast", "status", "1").output
        assert "state:    sending" in status
        assert ("winner:   picked at the first `nurture send-due` after Mon 2026-03-02 12:00 "
                "UTC") in status  # fmt: skip

        frozen.tick(timedelta(minutes=1))
        out = invoke(runner, env, "send-due").output
        assert out.startswith("send-due: 0 due, 20 broadcast, 20 sent")
    everyone = received_variants(sink)
    assert sorted(everyone) == sorted(READERS)
    assert len(sink.messages) == 40, "one email each"
    assert {everyone[e] for e in READERS if e not in tested} == {"B"}
    status = invoke(runner, env, "broadcast", "status", "1").output
    assert "state:    sent" in status
    rates = f"A {1 / len(a):.1%} (1 of {len(a)}), B {3 / len(b):.1%} (3 of {len(b)})"
    assert f"winner:   B (picked by clicks of the 50% test share: {rates})" in status
    stats = invoke(runner, env, "stats", "--experiment", "broadcast-1").output
    sent = {line.split()[0]: int(line.split()[2]) for line in stats.splitlines()
            if re.match(r"\s+[AB]\s+\d+%", line)}  # fmt: skip
    assert sent == {"A": len(a), "B": len(b)}  # the test share alone is compared
    assert "(and 20 sent B since it ended: not compared)" in stats


def test_keeping_a_variant_by_hand_sends_the_rest_at_the_next_send_due(runner, env, settings,
                                                                      sink, tmp_path):  # fmt: skip
    add_people(settings, [{"email": e} for e in READERS])
    issue = issue_file(tmp_path, FRONT, BODY)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "broadcast", "send", str(issue), "--test-share", "50%")
        frozen.tick(timedelta(minutes=30))  # long before the default 4 hours
        out = invoke(runner, env, "experiment", "end", "broadcast-1", "--keep", "A").output
        assert out == ("broadcast-1 ended: everyone gets A from now on. The rest of broadcast "
                       "#1's audience gets it at the next `nurture send-due`.\n")  # fmt: skip
        invoke(runner, env, "send-due")
    everyone = received_variants(sink)
    assert sorted(everyone) == sorted(READERS) and len(sink.messages) == 40
    assert list(everyone.values()).count("A") == 40 - list(everyone.values()).count("B")
    assert list(everyone.values()).count("B") < 20  # only test readers got B
    status = invoke(runner, env, "broadcast", "status", "1").output
    assert "winner:   A (nurture experiment end --keep A)" in status


def test_without_a_test_share_each_reader_gets_a_variant_at_once(runner, env, settings, sink,
                                                                tmp_path):  # fmt: skip
    add_people(settings, [{"email": e} for e in READERS])
    issue = issue_file(tmp_path, FRONT, BODY)
    dry = invoke(runner, env, "broadcast", "send", str(issue), "--dry-run").output
    assert "Variants: A 50%, B 50%\n" in dry
    dry = invoke(
        runner, env, "broadcast", "send", str(issue), "--dry-run", "--test-share", "20%"
    ).output
    assert "Variants: A 50%, B 50% to a 20% test share, then the winner by clicks\n" in dry
    out = invoke(runner, env, "broadcast", "send", str(issue)).output
    assert "Broadcast #1: 40 emails, 40 sent." in out
    assert sorted(set(received_variants(sink).values())) == ["A", "B"]
    listed = invoke(runner, env, "experiment", "list").output
    assert "broadcast-1: A 50%, B 50%, running" in listed


BAD_FRONT = [
    ('subject: "N"\nvariants:\n  - {name: A}\n  - {name: A, subject: "X"}',
     "issue.md:5: variant name 'A' is written twice"),
    ('subject: "N"\nvariants:\n  - {name: A}\n  - {name: B, subjct: "X"}',
     "issue.md:5: unknown key 'subjct' (did you mean 'subject'?)"),
    ('subject: "N"\nvariants:\n  - {name: A}\n  - {name: B, template: curious-to-customer/welcom}',
     "issue.md:5: variant B: curious-to-customer/welcom: neither a Markdown file nor a template "
     "(expected templates/email/curious-to-customer/welcom.html) (did you mean "
     "'curious-to-customer/welcome'?)"),
    ('subject: "N"\nvariants:\n  - {name: A, weight: 60%}\n  - {name: B, weight: 30%}',
     "issue.md:3: variants: the percentages add up to 90%, not 100%"),
    ('subject: "N"\nvariants:\n  - {name: A}\n  - {name: B}\ntest_share: "0%"',
     "issue.md:6: test_share: '0%' must be more than 0% and less than 100%"),
    ('subject: "N"\nvariants:\n  - {name: A}\n  - {name: B}\npick_by: click',
     "issue.md:6: pick_by: 'click' is not one of opens, clicks, conversions (did you mean 'clicks'?)"),
    ('subject: "N"\ngoal: {event: open}',
     "issue.md:3: event: 'open' is counted already: a goal is an event of your own, like "
     "purchased or demo_booked"),
]  # fmt: skip


@pytest.mark.parametrize(("front", "message"), BAD_FRONT)
def test_front_matter_experiment_mistakes_point_at_the_line(runner, env, tmp_path, front, message):
    issue = issue_file(tmp_path, front)
    result = runner.invoke(cli, ["broadcast", "send", str(issue), "--dry-run"], env=env)
    assert result.exit_code == 1
    assert result.output == f"Error: {str(issue).removesuffix('issue.md')}{message}\n"


BAD_OPTIONS = [
    (["--test-share", "20"], 2, "Invalid value for '--test-share': '20' is not a percentage: "
                                "write it like 10%"),
    (["--pick-after", "soon", "--test-share", "20%"], 2, "Invalid value for '--pick-after': bad "
     "duration 'soon'"),
    (["--by", "likes"], 2, "Invalid value for '--by': 'likes' is not one of 'opens', 'clicks', "
                           "'conversions'"),
    (["--pick-after", "2h"], 1, "Error: --pick-after and --by (pick_after, pick_by) go with "
                                "--test-share (test_share): give it too"),
    (["--test-share", "20%", "--by", "conversions"], 1, "--by conversions needs a goal"),
    (["--test-share", "20%", "--at", "2026-12-08 09:00", "--local-time"], 1,
     "Error: --test-share cannot go with --local-time"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "code", "message"), BAD_OPTIONS)
def test_test_share_options_are_checked(runner, env, tmp_path, options, code, message):
    front = 'subject: "N"\nvariants:\n  - {name: A}\n  - {name: B, subject: "M"}'
    issue = issue_file(tmp_path, front)
    result = runner.invoke(cli, ["broadcast", "send", str(issue), *options], env=env)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_a_test_share_needs_variants(runner, env, tmp_path):
    issue = issue_file(tmp_path, 'subject: "N"')
    result = runner.invoke(cli, ["broadcast", "send", str(issue), "--test-share", "20%"], env=env)
    assert result.exit_code == 1
    assert result.output.endswith("--test-share needs variants to test: list them under "
                                  "`variants:` in the front matter\n")  # fmt: skip


def test_broadcast_preview_renders_a_variant(runner, env, tmp_path):
    issue = issue_file(tmp_path, FRONT, BODY)
    b = runner.invoke(cli, ["broadcast", "preview", str(issue), "--variant", "B"], env=env)
    assert b.exit_code == 0 and b.output.startswith("Subject: News B\n")
    wrong = runner.invoke(cli, ["broadcast", "preview", str(issue), "--variant", "C"], env=env)
    assert wrong.exit_code == 1 and wrong.output.endswith("has no variant 'C' (variants: A, B)\n")


def test_a_share_with_fewer_than_one_reader_per_variant_is_refused(runner, env, settings,
                                                                  sink, tmp_path):  # fmt: skip
    add_people(settings, [{"email": e} for e in READERS])
    issue = issue_file(tmp_path, FRONT, BODY)
    refused = runner.invoke(cli, ["broadcast", "send", str(issue), "--test-share", "0.0001%"],
                            env=env)  # fmt: skip
    assert refused.exit_code == 1
    assert refused.output == (
        "Error: --test-share 0.0001% of 40 subscribers is fewer than one reader for each "
        "of the 2 variants: give at least 5%\n"
    )
    assert sink.messages == []
    assert "No broadcasts" in invoke(runner, env, "broadcast", "list").output


def test_a_test_share_that_reached_nobody_picks_no_winner(runner, env, settings, sink,
                                                          tmp_path):  # fmt: skip
    issue = issue_file(tmp_path, FRONT, BODY)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "broadcast", "send", str(issue), "--test-share", "50%")
        add_people(settings, [{"email": e} for e in READERS])  # after the test share went
        frozen.tick(timedelta(hours=4))
        invoke(runner, env, "send-due")
    assert set(received_variants(sink).values()) == {"A"} and len(sink.messages) == 40
    status = invoke(runner, env, "broadcast", "status", "1").output
    assert ("winner:   A (not picked: the 50% test share reached no reader, so A, the first "
            "variant, went to everyone)") in status  # fmt: skip


def test_the_dry_run_tells_the_test_share_and_when_the_winner_is_picked(runner, env, settings,
                                                                        tmp_path):  # fmt: skip
    add_people(settings, [{"email": e} for e in READERS])
    issue = issue_file(tmp_path, FRONT, BODY)
    with freeze_time(START, ignore=REAL_TIME_MODULES):
        result = invoke(runner, env, "broadcast", "send", str(issue), "--test-share", "20%",
                        "--pick-after", "4h", "--by", "clicks", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Test:     ~8 of 40 readers (A ~4, B ~4; by the hash of each address, so about)" in (
        result.output)  # fmt: skip
    assert ("Winner:   by clicks, picked at the first `nurture send-due` after Mon 2026-03-02 "
            "12:00 UTC, then sent to the rest") in result.output  # fmt: skip
    assert "warning" not in result.output


def test_a_test_share_too_small_for_a_variant_is_warned_of(runner, env, settings, sink, tmp_path):
    add_people(settings, [{"email": e} for e in READERS[:5]])
    issue = issue_file(tmp_path, FRONT, BODY)
    warning = ("warning: variants A, B get no reader in a 20% test share of 5 (about 1.0 "
               "readers for 2 variants): the first variant wins by default; raise --test-share "
               "or send without one\n")  # fmt: skip
    send = ["broadcast", "send", str(issue), "--test-share", "20%"]
    dry = invoke(runner, env, *send, "--dry-run")
    assert dry.exit_code == 0 and warning in dry.stderr and "Test:     ~1 of 5" in dry.stdout
    sent = invoke(runner, env, *send)  # fewer readers than variants: refused outright
    assert sent.exit_code == 1 and "is fewer than one reader for each of the 2 variants" in (
        sent.output)  # fmt: skip
    assert sink.messages == []
    bigger = invoke(runner, env, *send[:-1], "40%", "--dry-run")
    assert "warning" not in bigger.output  # 2 readers expected, one a variant
