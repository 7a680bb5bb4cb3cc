"""`simulate` shows what a real subscriber gets, when sequences share the daily cap."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from freezegun import freeze_time

from nurture.cli import cli
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
DAYS = 30
#: day, local time, UTC time, stage, step, subject and an optional [note]
ROW = re.compile(r"^\s*(\d+)\s+\w{3} \S+ \S+\s+(\S+ \S+) (\S+)\s+(\S+)\s+(.*?)\s*(?:\[(.*)\])?$")


def invoke(runner, env, *args) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def second_signup_sequence(workspace) -> None:
    (workspace / "sequences" / "second.yaml").write_text(textwrap.dedent("""
        name: second
        trigger: signup
        steps:
          - {id: hello, after: 0m, subject: "Hello again", template: curious-to-customer/welcome}
          - {id: more, after: 1h, subject: "More", template: curious-to-customer/welcome}
    """))  # fmt: skip


def timeline(output: str) -> list[tuple[str, str, str, str | None]]:
    """(UTC time, step, subject, note) of each row `simulate` printed."""
    rows = []
    for line in output.splitlines()[1:]:
        match = ROW.match(line)
        assert match, line
        _, utc, _, step, subject, note = match.groups()
        rows.append((utc, step, subject, note))
    return rows


def _sent(note: str | None) -> bool:
    return note is None or note.startswith("held back: ")


def test_simulate_matches_a_real_run_when_two_sequences_share_the_daily_cap(
    runner, env, sink, workspace
):
    second_signup_sequence(workspace)
    with freeze_time(START, ignore=REAL_TIME_MODULES):
        simulated = timeline(invoke(runner, env, "simulate", "from-curious-to-customer",
                                    "--days", str(DAYS)))  # fmt: skip
        from_second = timeline(invoke(runner, env, "simulate", "second", "--days", str(DAYS)))
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "sam@example.com", "--first-name", "Sam",
               "--confirmed")  # fmt: skip
        invoke(runner, env, "send-due")
        # the second sequence's first email waits for the next day, and says so
        show = invoke(runner, env, "subscribers", "show", "sam@example.com")
        assert "next: hello at 2026-03-03 00:00 (daily email limit reached)" in show
        run_cron(runner, env, frozen, START + timedelta(days=DAYS))
    real = [(f"{parsedate_to_datetime(m.message['Date']).astimezone(UTC):%Y-%m-%d %H:%M}",
             m.message["Subject"]) for m in sink.to("sam@example.com")]  # fmt: skip

    sent = [(utc, subject) for utc, _, subject, note in simulated if _sent(note)]
    assert sent == real
    # a step the cap held back says why, as `subscribers show` does
    capped = "held back: daily email limit reached"
    assert ("2026-03-03 00:00", "second/hello", "Hello again", capped) in simulated
    assert ("2026-03-04 00:00", "second/more", "More", capped) in simulated
    # asked about the other sequence, simulate shows the same emails on the same days
    assert [(u, s) for u, _, s, n in from_second if _sent(n)] == real
    assert ("2026-03-02 08:00", "from-curious-to-customer/welcome") in [
        (u, step) for u, step, _, _ in from_second
    ]  # fmt: skip
    # the gate's note names the step's fate once
    notes = [n for _, _, _, n in simulated if n]
    assert notes and not any(n.count("skipped") > 1 for n in notes)


def test_days_follow_the_local_calendar(runner, env, workspace):
    """Mon 20:30 then Tue 00:00 local: day 0 then day 1, though under 24 hours apart."""
    for other in (workspace / "sequences").glob("*.yaml"):
        other.unlink()
    (workspace / "sequences" / "night.yaml").write_text(textwrap.dedent("""
        name: night
        trigger: signup
        steps:
          - {id: hello, after: 0m, subject: "Hello", template: curious-to-customer/welcome}
          - {id: more, after: 1h, subject: "More", template: curious-to-customer/welcome}
    """))  # fmt: skip
    with freeze_time(datetime(2026, 3, 2, 20, 30, tzinfo=UTC), ignore=REAL_TIME_MODULES):
        out = invoke(runner, env, "simulate", "night", "--days", "3", "--timezone", "UTC")
    days = [line.split()[0] for line in out.splitlines()[1:]]
    assert days == ["0", "1"], out
    assert "[held back: daily email limit reached]" in out.splitlines()[2]
