"""The sunset policy through send-due, as readers live it: the win-back emails they get,
an open or a click that wins them back (a prefetcher's does not), the unsubscribe with
reason "inactive", newsletters stopped while sequences go on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time

from nurture.settings import load_settings
from nurture.web import create_app
from tests.helpers.broadcast import add_people
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron
from tests.helpers.sunset import PREFETCH, invoke, subjects, track, with_policy

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
WINBACK = ["Still there, friend?", "The three emails readers kept", "Shall I stop writing to you?"]
TIPS = """\
name: tips
trigger: tag:tips
steps:
  - id: tip
    subject: "A tip"
    preheader: "One tip."
    template: tips/tip
"""


def settle(runner, env, frozen, until: datetime) -> None:
    """send-due at each moment something is due, up to `until`, then once at `until`."""
    run_cron(runner, env, frozen, until)
    frozen.move_to(until)
    invoke(runner, env, "send-due")


def test_a_silent_reader_gets_the_win_back_then_is_unsubscribed_as_inactive(
    runner, env, sink, workspace
):
    with_policy(workspace, inactive_for="120d", winback="win-back", then="unsubscribe")
    settings = load_settings(workspace, env=env)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        add_people(settings, [{"email": "quiet@example.com", "confirmed_at": START}])
        frozen.move_to(START + timedelta(days=100))
        add_people(settings, [{"email": "new@example.com", "confirmed_at": START + timedelta(days=100)}])  # fmt: skip

        frozen.move_to(START + timedelta(days=119, hours=23))  # not silent for 120 days yet
        assert invoke(runner, env, "send-due") == "send-due: 0 due\n"
        entered = START + timedelta(days=120)
        frozen.move_to(entered)
        out = invoke(runner, env, "send-due")
        assert out == "send-due: 1 due, 1 sent, sunset: 1 into the win-back\n"
        assert subjects(sink, "quiet@example.com") == WINBACK[:1]

        last_call = entered + timedelta(days=10)
        settle(runner, env, frozen, last_call + timedelta(days=6, hours=23))  # within grace
        assert subjects(sink, "quiet@example.com") == WINBACK
        assert "quiet@example.com  active" in invoke(runner, env, "subscribers", "show",
                                                     "quiet@example.com")  # fmt: skip
        frozen.move_to(last_call + timedelta(days=7))
        out = invoke(runner, env, "send-due")
        assert out == "send-due: 0 due, sunset: 1 unsubscribed (inactive)\n"
        shown = invoke(runner, env, "subscribers", "show", "quiet@example.com")
        assert "quiet@example.com  unsubscribed" in shown
        assert (
            "sunset: found inactive 2026-06-30 09:00, unsubscribed as inactive 2026-07-17" in shown
        )
        assert "win-back                     completed" in shown
        assert "sunset: 0 in the win-back now, 0 won back, 1 unsubscribed as inactive" in invoke(
            runner, env, "stats"
        )
        # silence counts from confirmation for who never engaged: day 100 + 120
        settle(runner, env, frozen, START + timedelta(days=219, hours=23))
        assert sink.to("new@example.com") == []
        frozen.move_to(START + timedelta(days=220))
        assert "sunset: 1 into the win-back" in invoke(runner, env, "send-due")
        settle(runner, env, frozen, START + timedelta(days=400))
    assert subjects(sink, "quiet@example.com") == WINBACK  # nothing after the last call
    assert subjects(sink, "new@example.com") == WINBACK


def test_a_click_during_the_win_back_wins_the_reader_back_and_a_prefetch_does_not(
    runner, env, sink, workspace
):
    with_policy(workspace, inactive_for="120d", winback="win-back", then="unsubscribe")
    settings = load_settings(workspace, env=env)
    client = create_app(settings).test_client()
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        add_people(settings, [{"email": "quiet@example.com", "confirmed_at": START}])
        frozen.move_to(START + timedelta(days=121))
        invoke(runner, env, "send-due")
        [first] = sink.to("quiet@example.com")
        track(client, first, "open", agent=PREFETCH)  # Apple's prefetch: nobody read it
        track(client, first, "click", agent="Barracuda link scanner")
        assert "sunset: 1 into the win-back" not in invoke(runner, env, "send-due")
        assert "won back" not in invoke(runner, env, "sunset", "--dry-run")

        frozen.move_to(START + timedelta(days=124))
        track(client, first, "click")  # the reader
        assert "it would move 1 won back" in invoke(runner, env, "sunset", "--dry-run")
        assert invoke(runner, env, "send-due") == "send-due: 0 due, sunset: 1 won back\n"
        settle(runner, env, frozen, START + timedelta(days=200))
        assert subjects(sink, "quiet@example.com") == WINBACK[:1]  # no more win-back emails
        shown = invoke(runner, env, "subscribers", "show", "quiet@example.com")
        assert "quiet@example.com  active" in shown
        assert "win-back                     exited     ended 2026-07-04 09:00: won back" in shown
        assert "sunset: found inactive 2026-07-01 09:00, won back 2026-07-04 09:00" in shown
        assert "1 won back" in invoke(runner, env, "stats")

        # silent again for 120 days after that click: a second round of the win-back
        settle(runner, env, frozen, START + timedelta(days=124 + 120, minutes=1))
        assert subjects(sink, "quiet@example.com") == [WINBACK[0], WINBACK[0]]


def test_stop_broadcasts_keeps_sequences_and_a_reader_who_opens_gets_newsletters_again(
    runner, env, sink, workspace, tmp_path
):
    with_policy(workspace, inactive_for="120d", then="stop_broadcasts")
    (workspace / "sequences" / "tips.yaml").write_text(TIPS)
    (workspace / "templates" / "email" / "tips").mkdir()
    (workspace / "templates" / "email" / "tips" / "tip.html").write_text(
        '<p>Bake on Sunday. <a href="https://crumb.example/tips">More</a></p>\n'
    )
    settings = load_settings(workspace, env=env)
    client = create_app(settings).test_client()

    def newsletter(name: str) -> None:
        issue = tmp_path / f"{name}.md"
        issue.write_text(f'---\nsubject: "{name}"\n---\nNews. [More](https://crumb.example/n)\n')
        invoke(runner, env, "broadcast", "send", str(issue), "--at", "now", "--no-local-time")

    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        add_people(settings, [{"email": "quiet@example.com", "confirmed_at": START},
                              {"email": "reader@example.com", "confirmed_at": START}])  # fmt: skip
        frozen.move_to(START + timedelta(days=100))
        newsletter("April")
        track(client, sink.to("reader@example.com")[-1], "click")
        frozen.move_to(START + timedelta(days=121))
        out = invoke(runner, env, "sunset")
        assert out.splitlines()[-1] == "sunset: 1 newsletters stopped"
        newsletter("May")
        assert subjects(sink, "reader@example.com") == ["April", "May"]
        assert subjects(sink, "quiet@example.com") == ["April"]  # no May

        invoke(runner, env, "subscribers", "tag", "quiet@example.com", "tips")
        invoke(runner, env, "send-due")
        assert subjects(sink, "quiet@example.com") == ["April", "A tip"]  # sequences go on
        frozen.move_to(START + timedelta(days=122))
        track(client, sink.to("quiet@example.com")[-1], "open")
        assert invoke(runner, env, "send-due") == "send-due: 0 due, sunset: 1 won back\n"
        newsletter("June")
    assert subjects(sink, "quiet@example.com") == ["April", "A tip", "June"]


def test_send_due_looks_for_the_newly_inactive_once_an_hour(runner, env, sink, workspace):
    """Looking reads the whole list, so send-due does it hourly; `nurture sunset` and
    winning back do not wait."""
    with_policy(workspace, inactive_for="120d", winback="win-back", then="unsubscribe")
    settings = load_settings(workspace, env=env)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        add_people(settings, [{"email": "quiet@example.com", "confirmed_at": START},
                              {"email": "later@example.com",
                               "confirmed_at": START + timedelta(minutes=30)}])  # fmt: skip
        frozen.move_to(START + timedelta(days=120, minutes=10))
        assert "sunset: 1 into the win-back" in invoke(runner, env, "send-due")
        frozen.move_to(START + timedelta(days=120, minutes=40))  # later@ is silent 120 days now
        assert "sunset" not in invoke(runner, env, "send-due")
        assert "later@example.com" in invoke(runner, env, "sunset", "--dry-run")
        frozen.move_to(START + timedelta(days=120, minutes=70))
        assert "sunset: 1 into the win-back" in invoke(runner, env, "send-due")
    assert subjects(sink, "later@example.com") == WINBACK[:1]
