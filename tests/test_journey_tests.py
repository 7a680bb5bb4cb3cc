"""`nurture test`: journey tests for sequences, their invariants and email snapshots."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from nurture.cli import cli

ROOT = Path(__file__).parent.parent
TESTS = Path("sequences") / "tests" / "curious-to-customer.yaml"
SNAPSHOTS = Path("sequences") / "tests" / "__snapshots__"


@pytest.fixture
def ws(workspace: Path) -> Path:
    """The example workspace with the repository's own settings (snapshots show them)."""
    shutil.copy(ROOT / "nurture.toml", workspace / "nurture.toml")
    return workspace


def run(runner, ws: Path, *args: str, env: dict[str, str] | None = None):
    """`nurture test` in a workspace, with none of the caller's NURTURE_* settings."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("NURTURE_")}
    clean.update({"NURTURE_SECRET_KEY": "k" * 40, **(env or {})})
    return runner.invoke(cli, ["--workspace", str(ws), "test", *args], env=clean)


def edit(path: Path, old: str, new: str) -> int:
    """Replace `old` once in a file; the 1-based line where it was."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return text[: text.index(old)].count("\n") + 1


def test_the_repositorys_example_passes_with_its_snapshots(runner):
    """CI runs the example's journey tests (and checks its snapshots) through this test."""
    result = run(runner, ROOT, "--snapshots")
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip().splitlines()[-1] == "1 test file, 4 personas, 107 checks: all passed"
    )


def test_a_broken_expectation_fails_with_path_line_expected_and_got(runner, ws):
    line = edit(ws / TESTS, "lets-talk: day 25", "lets-talk: day 24")
    result = run(runner, ws)
    assert result.exit_code == 1
    assert (f"{TESTS}:{line}: expected lets-talk on day 24, got day 25 (Fri 2026-03-27 09:00)"
            " (persona engaged-reader)") in result.output  # fmt: skip
    assert result.output.strip().splitlines()[-1].endswith(": 1 failed")


def test_a_step_that_never_arrives_says_why(runner, ws):
    line = edit(ws / TESTS, "small-wins: day 29", "small-wins: day 29\n        lets-talk: day 25")
    result = run(runner, ws)
    assert result.exit_code == 1
    assert f"{TESTS}:{line + 1}: expected lets-talk on day 25, got never" in result.output
    assert ("(the enrolment ended on day 29 (Tue 2026-03-31 10:00): finished the sequence) "
            "(persona quiet-reader)") in result.output  # fmt: skip


def test_removing_the_goal_breaks_the_no_sales_after_a_demo_invariant(runner, ws):
    edit(ws / "sequences" / "from-curious-to-customer.yaml",
         "exit_when: {event: demo_booked}", "")  # fmt: skip
    line = (ws / TESTS).read_text().splitlines().index(
        "  no_sales_after: [event:demo_booked]     # nobody who booked a demo gets a sales step"
    ) + 1
    result = run(runner, ws)
    assert result.exit_code == 1
    assert re.search(rf"{TESTS}:{line}: expected no sales step after event:demo_booked "
                     r"\(day 10 .*\), got are-leads-converting on day 18 .*\(persona "
                     r"books-a-demo\)", result.output), result.output  # fmt: skip


def test_two_emails_on_one_local_day_break_the_invariant(runner, ws):
    """With a daily cap of 2, a step moved to the same day as the one before it arrives
    that day: the invariant says no."""
    seq = ws / "sequences" / "from-curious-to-customer.yaml"
    edit(seq, "  - id: get-known\n    after: 3 days", "  - id: get-known\n    after: 1h")
    result = run(runner, ws, env={"NURTURE_MAX_PER_DAY": "2"})
    assert result.exit_code == 1
    assert (f"{TESTS}:8: expected at most 1 emails per local day, got 2 on day 2 "
            "(know-your-audience, get-known) (persona engaged-reader)") in result.output  # fmt: skip


def test_a_path_that_does_not_end_in_time_breaks_the_invariant(runner, ws):
    edit(ws / TESTS, "ends_within: 60 days", "ends_within: 20 days")
    result = run(runner, ws)
    assert result.exit_code == 1
    assert (f"{TESTS}:9: expected the enrolment to end within 20 days, got it ended on day 29"
            in result.output)  # fmt: skip


def test_mistakes_in_a_test_file_are_reported_by_line(runner, ws):
    (ws / "sequences" / "tests" / "bad.yaml").write_text(
        "sequence: from-curious-to-customer\n"
        "personas:\n"
        "  - name: x\n"
        "    events: [click:welcom@1d]\n"
        "    expect: {receives: {welcome: soon}, ends: {day: 3, status: done}}\n"
        "  - {name: y, timezon: UTC}\n"
        "  - &a {name: z}\n"
    )
    result = run(runner, ws)
    assert result.exit_code == 1
    assert "sequences/tests/bad.yaml:7: YAML: anchors and aliases" in result.output
    (ws / "sequences" / "tests" / "bad.yaml").write_text(
        (ws / "sequences" / "tests" / "bad.yaml").read_text().replace("&a ", "")
    )
    result = run(runner, ws)
    out = result.output
    assert (
        "sequences/tests/bad.yaml:4: the sequence has no step 'welcom' (did you mean 'welcome'?)"
        in out
    )
    assert "sequences/tests/bad.yaml:5: 'soon' is not a day" in out
    assert (
        "sequences/tests/bad.yaml:5: status: 'done' is not one of completed, exited, active" in out
    )
    assert "sequences/tests/bad.yaml:6: unknown key 'timezon' (did you mean 'timezone'?)" in out
    assert "Traceback" not in out


def test_test_files_are_not_taken_for_sequences(runner, ws):
    clean = {k: None for k in os.environ if k.startswith("NURTURE_")}
    result = runner.invoke(cli, ["--workspace", str(ws), "validate"], env=clean)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("2 sequences, 14 steps: 0 errors")


def test_a_template_change_fails_the_snapshots_until_accepted(runner, ws):
    edit(ws / "templates" / "email" / "curious-to-customer" / "lets-talk.html",
         "Book your free 30-minute call", "Book your free 20-minute call")  # fmt: skip
    result = run(runner, ws, "--snapshots")
    assert result.exit_code == 1
    shown = SNAPSHOTS / "engaged-reader" / "lets-talk.html"
    assert (
        f"{shown}: snapshot changed (accept it with `nurture test --snapshots --update`)"
        in result.output
    )
    assert re.search(r"^-.*Book your free 30-minute call", result.output, re.M)
    assert re.search(r"^\+.*Book your free 20-minute call", result.output, re.M)
    assert "lets-talk.txt" not in result.output  # the text twin did not change

    result = run(runner, ws, "--update")
    assert result.exit_code == 0, result.output
    assert f"{shown}: updated" in result.output
    assert "20-minute call" in (ws / shown).read_text()
    assert run(runner, ws, "--snapshots").exit_code == 0


def test_snapshots_are_written_on_first_run_and_stale_ones_reported(runner, ws):
    shutil.rmtree(ws / SNAPSHOTS / "quiet-reader")
    (ws / SNAPSHOTS / "engaged-reader" / "gone.txt").write_text("an email nobody gets\n")
    result = run(runner, ws, "--snapshots")
    assert result.exit_code == 1
    assert f"{SNAPSHOTS}/quiet-reader/welcome.html: new snapshot written" in result.output
    assert f"{SNAPSHOTS}/engaged-reader/gone.txt: no persona receives this email" in result.output
    assert (ws / SNAPSHOTS / "quiet-reader" / "small-wins.txt").is_file()
    result = run(runner, ws, "--update")
    assert result.exit_code == 0
    assert not (ws / SNAPSHOTS / "engaged-reader" / "gone.txt").exists()


def test_snapshots_are_the_same_from_run_to_run(runner, ws):
    """No token, date or Message-ID in a snapshot: two renders are byte for byte equal."""
    shutil.rmtree(ws / SNAPSHOTS)
    assert run(runner, ws, "--snapshots").exit_code == 0
    first = {p: p.read_bytes() for p in (ws / SNAPSHOTS).rglob("*.*")}
    shutil.rmtree(ws / SNAPSHOTS)
    assert run(runner, ws, "--snapshots").exit_code == 0
    assert {p: p.read_bytes() for p in (ws / SNAPSHOTS).rglob("*.*")} == first
    text = (ws / SNAPSHOTS / "engaged-reader" / "welcome.txt").read_text()
    assert "https://nurture.example/unsubscribe/TOKEN" in text
    assert first == {p: (ROOT / p.relative_to(ws)).read_bytes() for p in first}


def test_init_writes_the_tests_and_they_pass(runner, tmp_path):
    clean = {k: None for k in os.environ if k.startswith("NURTURE_")}
    assert runner.invoke(cli, ["init", str(tmp_path / "new")], env=clean).exit_code == 0
    assert (tmp_path / "new" / TESTS).is_file()
    assert (tmp_path / "new" / SNAPSHOTS / "engaged-reader" / "welcome.html").is_file()
    result = run(runner, tmp_path / "new", "--snapshots")
    assert result.exit_code == 0, result.output


def test_no_tests_is_said_and_not_a_failure(runner, ws):
    shutil.rmtree(ws / "sequences" / "tests")
    result = run(runner, ws)
    assert result.exit_code == 0
    assert "No journey tests" in result.output


def test_a_broken_test_file_leaves_its_snapshots_alone(runner, ws):
    tests = ws / TESTS
    tests.write_text(tests.read_text().replace("days: 60 ", "days: sixty "))
    result = run(runner, ws, "--snapshots")
    assert result.exit_code == 1
    assert f"{TESTS}:5: days: 'sixty' is not a number of days from 1 to 3650" in result.output
    assert "no persona receives" not in result.output
    assert result.output.strip().splitlines()[-1] == ("1 test file, 0 personas, 0 checks: 1 failed")
    assert (ws / SNAPSHOTS / "engaged-reader" / "welcome.html").is_file()
