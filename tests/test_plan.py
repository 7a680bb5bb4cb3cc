"""`nurture plan` on the example sequence, with people waiting at every step: an edited
delay, a removed step and a new gate each give the right counts and exit 2; an edit
that touches no one exits 0; `--since` reads a git ref. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select, update

from nurture.cli import cli
from nurture.content import sequences
from nurture.health import check_database
from nurture.store import engine as db
from nurture.store.tables import Delivery, Enrollment, EnrollmentStatus, SequenceVersion
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
#: One new reader every other day for three weeks: someone waits at almost every step.
SIGNUPS = range(0, 22, 2)
END = START + timedelta(days=21)
SEQ = "from-curious-to-customer.yaml"


def waiting(url: str) -> dict[str, list[datetime]]:
    """Who waits for which step, and until when, as the database has it."""
    with db.engine_for(url).connect() as conn:
        rows = conn.execute(
            select(Enrollment.next_step_id, Enrollment.next_due_at).where(
                Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.next_due_at.is_not(None)
            )
        ).all()
    out: dict[str, list[datetime]] = {}
    for step, due in rows:
        out.setdefault(step, []).append(due if due.tzinfo else due.replace(tzinfo=UTC))
    return out


def snapshot(url: str) -> list[tuple]:
    """Every enrolment and delivery row: plan must leave them as they are."""
    with db.engine_for(url).connect() as conn:
        return [*conn.execute(select(Enrollment)).all(), *conn.execute(select(Delivery)).all()]


def edit(workspace: Path, old: str, new: str) -> None:
    path = workspace / "sequences" / SEQ
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    sequences._cache.clear()


@pytest.fixture
def crowd(runner, env, workspace):
    """The example workspace with readers at every step, the clock frozen at END."""
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        for day in SIGNUPS:
            frozen.move_to(START + timedelta(days=day))
            added = runner.invoke(cli, ["subscribers", "add", f"reader{day}@example.com",
                                        "--confirmed"], env=env)  # fmt: skip
            assert added.exit_code == 0, added.output
            run_cron(
                runner, env, frozen, until=START + timedelta(days=day + 2) - timedelta(minutes=1)
            )
        frozen.move_to(END)
        assert runner.invoke(cli, ["send-due"], env=env).exit_code == 0
        yield frozen


def plan(runner, env, *args: str):
    result = runner.invoke(cli, ["plan", *args], env=env)
    return result


def test_edits_give_the_right_counts(runner, env, workspace, crowd, database_url):
    at = waiting(database_url)
    # readers wait at the early steps, at a gate, and further on
    assert {"know-your-audience", "get-known", "capture-leads", "are-leads-converting"} <= set(at)
    before = snapshot(database_url)

    untouched = plan(runner, env)
    assert untouched.exit_code == 0, untouched.output
    assert "Changes:\n  none" in untouched.output and "no one is affected" in untouched.output

    # an edited delay: everyone waiting for that step, moved by the difference
    edit(workspace, "    after: 2 days\n", "    after: 5 days\n")
    moved = plan(runner, env, "--format", "json")
    assert moved.exit_code == 2, moved.output
    report = json.loads(moved.output)
    assert report["moves_people"] is True
    assert [c["kind"] for c in report["changes"]] == ["delay"]
    effects = report["effects"]
    assert sum(e["count"] for e in effects) == len(at["know-your-audience"])
    assert {e["kind"] for e in effects} == {"moves"} and {e["step"] for e in effects} == {
        "know-your-audience"
    }
    for due in at["know-your-audience"]:
        shown = f"from {due:%Y-%m-%d %H:%M} UTC to {due + timedelta(days=3):%Y-%m-%d %H:%M} UTC"
        assert any(shown in e["text"] for e in effects), effects
    edit(workspace, "    after: 5 days\n", "    after: 2 days\n")

    # a removed step: everyone waiting for it ends their enrolment
    edit(workspace, "  - id: get-known\n", "  - id: get-known-better\n")
    removed = plan(runner, env)
    assert removed.exit_code == 2, removed.output
    n = len(at["get-known"])
    assert f"get-known: {n} waiting for get-known → their enrolment ends" in removed.output
    assert "a rename?" in removed.output
    edit(workspace, "  - id: get-known-better\n", "  - id: get-known\n")

    # a new gate nobody passes: everyone waiting for that step is skipped
    edit(workspace, "    template: curious-to-customer/capture-leads\n",
         "    template: curious-to-customer/capture-leads\n    when: {tag: vip}\n")  # fmt: skip
    gated = plan(runner, env)
    assert gated.exit_code == 2, gated.output
    n = len(at["capture-leads"])
    assert (
        f"capture-leads: {n} who will now be skipped by the gate of capture-leads" in gated.output
    )
    edit(workspace, "    when: {tag: vip}\n", "")

    # a shorter wait at a gate: those waiting at it get the other branch sooner
    edit(workspace, "    wait_up_to: 7d", "    wait_up_to: 1d")
    shorter = plan(runner, env, "--format", "json")
    assert shorter.exit_code == 2, shorter.output
    effects = json.loads(shorter.output)["effects"]
    # those at the gate move; those who reach it within the week get the other branch sooner
    assert {(e["step"], e["kind"]) for e in effects} == {
        ("more-stories", "moves"),
        ("more-stories", "later"),
    }
    moves = [e for e in effects if e["kind"] == "moves"]
    assert sum(e["count"] for e in moves) == len(at["are-leads-converting"])
    edit(workspace, "    wait_up_to: 1d", "    wait_up_to: 7d")

    # a template edit changes what the next email says, not when: no one is moved
    page = workspace / "templates" / "email" / "curious-to-customer" / "get-known.html"
    page.write_text(page.read_text() + "\n<p>P.S. One more thing.</p>\n")
    reworded = plan(runner, env)
    assert reworded.exit_code == 0, reworded.output
    n = len(at["get-known"])
    assert (
        f"get-known: {n} whose next email (get-known) uses the edited template" in reworded.output
    )
    assert "template curious-to-customer/get-known edited" in reworded.output
    page.write_text(page.read_text().replace("\n<p>P.S. One more thing.</p>\n", ""))

    # an edit of a step nobody has reached yet touches no one
    edit(workspace, '    subject: "One small marketing habit', '    subject: "One small habit')
    quiet = plan(runner, env)
    assert quiet.exit_code == 0, quiet.output
    assert "subject" in quiet.output and "no one is affected" in quiet.output
    assert snapshot(database_url) == before


def test_recording_the_edit_moves_people_by_the_new_delay(
    runner, env, workspace, crowd, database_url
):
    at = waiting(database_url)["know-your-audience"]
    edit(workspace, "    after: 2 days\n", "    after: 5 days\n")
    assert runner.invoke(cli, ["send-due"], env=env).exit_code == 0
    assert sorted(waiting(database_url)["know-your-audience"]) == sorted(
        d + timedelta(days=3) for d in at
    )
    again = plan(runner, env)
    assert again.exit_code == 0 and "Changes:\n  none" in again.output
    with db.engine_for(database_url).connect() as conn:
        files = conn.execute(select(SequenceVersion.files).where(
            SequenceVersion.sequence == "from-curious-to-customer"
        )).scalar_one()  # fmt: skip
    assert "after: 5 days" in files[f"sequences/{SEQ}"]
    assert "templates/email/curious-to-customer/welcome.html" in files


def test_a_changed_gate_is_decided_again_at_the_next_run(
    runner, env, workspace, crowd, database_url
):
    """Someone waiting at a gate whose wait is shortened is not held to the old deadline."""
    before = sorted(waiting(database_url)["are-leads-converting"])
    at_gate = len(before)
    assert at_gate
    edit(workspace, "    wait_up_to: 7d", "    wait_up_to: 1d")
    assert runner.invoke(cli, ["send-due"], env=env).exit_code == 0
    still = waiting(database_url).get("are-leads-converting", [])
    assert len(still) < at_gate
    assert all(new <= old for new, old in zip(sorted(still), before[-len(still) :], strict=False))
    with db.engine_for(database_url).connect() as conn:
        skipped = conn.execute(select(Delivery.error).where(Delivery.step_id == "are-leads-converting",
                                                            Delivery.status == "skipped")).scalars().all()  # fmt: skip
    assert (
        skipped
        and len(skipped) + len(still) == at_gate
        and all("gate timed out after 1d" in e for e in skipped)
    )


def test_a_broken_sequence_is_an_error_not_a_removal(runner, env, workspace, caplog):
    edit(workspace, "    after: 2 days\n", "    after: 2 dayz\n")
    result = plan(runner, env)
    assert result.exit_code == 1
    assert (
        "sequences/from-curious-to-customer.yaml:" in result.output
        and "bad duration" in result.output
    )
    assert "Traceback" not in result.output
    # said once, as the error, not also as a warning beforehand
    assert result.output.count("bad duration") == 1, result.output
    assert not [r for r in caplog.records if "bad duration" in r.getMessage()]


def test_serve_records_the_sequences_it_starts_with(settings, database_url):
    check_database(settings)  # what `nurture serve` runs before its workers start
    with db.engine_for(database_url).connect() as conn:
        names = conn.execute(select(SequenceVersion.sequence)).scalars().all()
    assert sorted(names) == ["from-curious-to-customer", "win-back"]


def test_nothing_recorded_yet(runner, env):
    result = plan(runner, env)
    assert result.exit_code == 0, result.output
    assert "Nothing recorded yet" in result.output


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=cwd, check=True, capture_output=True)  # fmt: skip


def test_since_a_git_ref(runner, env, workspace, crowd, database_url):
    not_a_repo = plan(runner, env, "--since", "HEAD")
    assert not_a_repo.exit_code == 1
    assert "is not in a git repository" in not_a_repo.output
    git(workspace, "init", "-q")
    git(workspace, "add", "sequences", "templates")
    git(workspace, "commit", "-qm", "example")
    unknown = plan(runner, env, "--since", "no-such-branch")
    assert unknown.exit_code == 1 and "unknown git ref 'no-such-branch'" in unknown.output
    assert "Traceback" not in unknown.output
    edit(workspace, "    after: 2 days\n", "    after: 5 days\n")
    result = plan(runner, env, "--since", "HEAD", "--format", "json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.output)
    assert report["baseline"] == "git HEAD"
    assert sum(e["count"] for e in report["effects"]) == len(
        waiting(database_url)["know-your-audience"]
    )


def test_an_edit_that_cannot_be_sent_is_an_error(runner, env, workspace, crowd, database_url):
    """A template that does not exist or does not parse would fail everyone reaching it."""
    before = snapshot(database_url)
    edit(workspace, "    template: curious-to-customer/get-known\n",
         "    template: curious-to-customer/get-knwon\n")  # fmt: skip
    renamed = plan(runner, env)
    assert renamed.exit_code == 1, renamed.output
    assert f"sequences/{SEQ}:30: " in renamed.output and "get-knwon" in renamed.output
    assert "whose next email" not in renamed.output and "Traceback" not in renamed.output
    edit(workspace, "    template: curious-to-customer/get-knwon\n",
         "    template: curious-to-customer/get-known\n")  # fmt: skip

    page = workspace / "templates" / "email" / "curious-to-customer" / "get-known.html"
    page.write_text(page.read_text() + "\n<p>{% if %}</p>\n")
    broken = plan(runner, env)
    assert broken.exit_code == 1, broken.output
    assert "templates/email/curious-to-customer/get-known.html:" in broken.output
    assert "Traceback" not in broken.output
    assert snapshot(database_url) == before


def test_a_later_step_reached_within_the_week_is_an_effect(
    runner, env, workspace, crowd, database_url
):
    """Nobody's next email changes, but those waiting for know-your-audience reach a new
    step within the forecast week: that is an effect, and exit 2."""
    at = waiting(database_url)
    assert "say-hello" not in at
    edit(workspace, "  - id: get-known\n", "  - id: say-hello\n    after: 1 day\n"
         '    subject: "Hello"\n    template: curious-to-customer/get-known\n'
         "  - id: get-known\n")  # fmt: skip
    result = plan(runner, env, "--format", "json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.output)
    assert report["moves_people"] is True
    gained = report["forecast"]["from-curious-to-customer"]["say-hello"]
    assert gained["before"] == 0 and gained["after"] > 0
    effects = [e for e in report["effects"] if e["step"] == "say-hello"]
    assert [e["kind"] for e in effects] == ["later"]
    assert effects[0]["text"].endswith("who now also get say-hello within 7 days")
    text = plan(runner, env)
    assert text.exit_code == 2 and "no one is affected" not in text.output


def test_a_layout_edit_is_listed_and_moves_no_one(runner, env, workspace, crowd):
    layout = workspace / "templates" / "email" / "_layout.html"
    layout.write_text(layout.read_text().replace("</body>", "<p>New footer</p></body>", 1))
    result = plan(runner, env)
    assert result.exit_code == 0, result.output
    assert "from-curious-to-customer: layout _layout.html edited" in result.output
    assert "Changes:\n  none" not in result.output


def test_gates_and_dates_are_shown_as_written(runner, env, workspace, crowd, database_url):
    edit(workspace, "    template: curious-to-customer/capture-leads\n",
         "    template: curious-to-customer/capture-leads\n    when: {ready: true}\n")  # fmt: skip
    gated = plan(runner, env)
    assert "gate: no gate → when {ready: true}" in gated.output, gated.output
    assert "True" not in gated.output
    edit(workspace, "    when: {ready: true}\n", "")
    # those waiting for capture-leads, due within the same minute: one date, not a range
    at = END + timedelta(days=1, hours=1)
    with db.engine_for(database_url).begin() as conn:
        ids = conn.execute(select(Enrollment.id).where(Enrollment.next_step_id == "capture-leads",
                                                       Enrollment.status == EnrollmentStatus.ACTIVE)).scalars().all()  # fmt: skip
        assert len(ids) > 1
        for i, eid in enumerate(ids):
            conn.execute(update(Enrollment).where(Enrollment.id == eid)
                         .values(next_due_at=at + timedelta(seconds=i)))  # fmt: skip
    edit(workspace, "  - id: capture-leads\n    after: 3 days\n",
         "  - id: capture-leads\n    after: 4 days\n")  # fmt: skip
    moved = plan(runner, env)
    assert moved.exit_code == 2
    later = at + timedelta(days=1)
    assert (f"{len(ids)} whose next email (capture-leads) moves from {at:%Y-%m-%d %H:%M} UTC "
            f"to {later:%Y-%m-%d %H:%M} UTC (1d later)") in moved.output, moved.output  # fmt: skip
    assert not re.search(r"between (\S+ \S+ UTC) and \1", moved.output), moved.output
