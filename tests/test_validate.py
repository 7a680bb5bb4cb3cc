"""`nurture validate` names every problem with its file and line, all at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nurture.cli import cli


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def broken(workspace: Path) -> Path:
    write(workspace / "sequences" / "broken.yaml", """
        name: broken
        trigger: signup
        steps:
          - id: hello
            after: 0m
            subjet: "Hi"
            template: broken/hello
          - id: hello
            after: 2 dayz
            subject: "Again"
            template: broken/missing
          - id: vars
            after: 1d
            subject: "Hi {{ subscriber.frist_name }}"
            template: broken/vars
          - id: syntax
            after: 1d
            subject: "Syntax"
            template: broken/syntax
    """)  # fmt: skip
    write(workspace / "sequences" / "notyaml.yaml", "name: x\nsteps: [\n  - id: a\n")
    tdir = workspace / "templates" / "email" / "broken"
    write(tdir / "hello.html", "<p>Hello</p>\n")
    write(tdir / "vars.html", "<p>Hello</p>\n<p>{{ customer.name }}</p>\n")
    write(
        tdir / "syntax.html", "<p>one</p>\n<p>two</p>\n{% if subscriber.first_name %}\n<p>x</p>\n"
    )
    return workspace


def run_validate(runner, workspace: Path, **env: str):
    return runner.invoke(cli, ["--workspace", str(workspace), "validate"],
                         env={"NURTURE_DATABASE_URL": "sqlite://", **env})  # fmt: skip


def test_the_example_workspace_is_valid(runner, workspace):
    result = run_validate(runner, workspace)
    assert result.exit_code == 0, result.output
    assert "2 sequences, 14 steps: 0 errors, 0 warnings" in result.output


def test_every_kind_of_problem_is_reported_with_its_line(runner, broken):
    result = run_validate(runner, broken)
    assert result.exit_code == 1
    out = result.output
    assert "sequences/broken.yaml:6: unknown key 'subjet' (did you mean 'subject'?)" in out
    assert "sequences/broken.yaml:4: missing required key 'subject'" in out
    assert "sequences/broken.yaml:8: duplicate step id 'hello'" in out
    assert "sequences/broken.yaml:9: after: bad duration '2 dayz'" in out
    assert "sequences/notyaml.yaml:3: YAML:" in out
    assert "sequences/broken.yaml:11: template 'broken/missing' not found" in out
    assert ("sequences/broken.yaml:14: subject: undefined: subscriber has no attribute "
            "'frist_name' (did you mean 'subscriber.first_name'?)") in out  # fmt: skip
    assert "templates/email/broken/vars.html:2: undefined variable 'customer'" in out
    assert "templates/email/broken/syntax.html:3: template syntax: Unexpected end" in out
    assert "4 sequences (2 with errors), 18 steps: 9 errors, 0 warnings" in out
    lines = [line for line in out.splitlines() if line.startswith("sequences/broken.yaml")]
    assert lines == sorted(lines, key=lambda x: int(x.split(":")[1])), "sorted by line"


def test_template_problems_remain_once_the_yaml_is_fixed(runner, broken):
    seq = broken / "sequences" / "broken.yaml"
    seq.write_text(seq.read_text().replace("subjet", "subject").replace("2 dayz", "2 days")
                   .replace("  - id: hello\n    after: 2", "  - id: again\n    after: 2"))  # fmt: skip
    result = run_validate(runner, broken)
    out = result.output
    assert result.exit_code == 1
    assert "sequences/broken.yaml:11: template 'broken/missing' not found" in out
    assert "sequences/broken.yaml:14: subject: undefined: " in out and "frist_name" in out
    assert "templates/email/broken/vars.html:2: undefined variable 'customer'" in out


def test_missing_sender_is_an_error_and_missing_postal_address_a_warning(runner, workspace):
    (workspace / "nurture.toml").write_text("")
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    assert "NURTURE_FROM is not set" in result.output
    assert "warning: NURTURE_POSTAL_ADDRESS is not set" in result.output
    result = run_validate(runner, workspace, NURTURE_FROM="Shop <shop@example.com>")
    assert result.exit_code == 0, result.output
    assert "1 warnings" in result.output


def test_undefined_attribute_in_template_is_found_by_rendering(runner, workspace):
    write(workspace / "templates/email/curious-to-customer/welcome.html",
          "<p>Hi</p>\n<p>{{ subscriber.nickname }}</p>\n")  # fmt: skip
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    assert "templates/email/curious-to-customer/welcome.html:2: undefined:" in result.output
    assert "nickname" in result.output


def test_gates_must_name_earlier_steps_and_be_able_to_open(runner, workspace):
    write(workspace / "sequences" / "gated.yaml", """
        name: gated
        exit_when: {event: demo_booked}
        steps:
          - id: first
            subject: "One"
            template: curious-to-customer/welcome
          - id: pitch
            after: 2d
            stage: sales
            subject: "Two"
            template: curious-to-customer/lets-talk
            when: {ready: true, clicked: frist}
            wait_up_to: 7d
            otherwise: extra
          - id: early
            after: 1d
            subject: "Three"
            template: curious-to-customer/welcome
            when: {opened: later}
          - id: later
            subject: "Four"
            template: curious-to-customer/welcome
    """)  # fmt: skip
    write(workspace / "sequences" / "shape.yaml", """
        steps:
          - id: only
            subject: "One"
            template: curious-to-customer/welcome
            when: {tag: vip}
            otherwise: skip
          - id: two
            subject: "Two"
            template: curious-to-customer/welcome
            when: {tag: vip, colour: red}
    """)  # fmt: skip
    result = run_validate(runner, workspace)
    out = result.output
    assert result.exit_code == 1
    assert (
        "gated.yaml:12: step 'pitch': when.clicked names unknown step 'frist' "
        "(did you mean 'first'?)" in out
    )
    assert (
        "gated.yaml:12: step 'pitch': when uses readiness but the sequence has no "
        "`readiness:` block" in out
    )
    assert "gated.yaml:14: step 'pitch': otherwise names unknown step 'extra'" in out
    assert "gated.yaml:19: step 'early': when.opened names 'later', which is not sent" in out
    assert "shape.yaml:6: step 'only': otherwise needs wait_up_to" in out
    assert "shape.yaml:10: unknown key 'colour'" in out


def test_each_problem_points_at_its_own_field(runner, workspace):
    write(workspace / "sequences" / "fields.yaml", """
        name: fields
        trigger: completed:nowhere
        steps:
          - id: first
            after: 0m
            stage: education
            # the subject comes last but one
            when: {tag: vip}
            wait_up_to: 2d
            otherwise: skip
            subject: "Hi {{ subscriber.frist_name }}"
            template: fields/missing
    """)  # fmt: skip
    write(workspace / "sequences" / "twin.yaml", """
        description: same name as the example

        name: from-curious-to-customer
        steps:
          - id: one
            subject: "One"
            template: curious-to-customer/welcome
    """)  # fmt: skip
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    found = [line for line in result.output.splitlines() if line.startswith("sequences/")]
    assert found == [
        "sequences/fields.yaml:2: trigger names sequence 'nowhere', which does not exist "
        "(or is this one)",
        "sequences/fields.yaml:11: subject: undefined: subscriber has no attribute "
        "'frist_name' (did you mean 'subscriber.first_name'?)",
        "sequences/fields.yaml:12: template 'fields/missing' not found "
        "(expected templates/email/fields/missing.html)",
        "sequences/twin.yaml:3: name 'from-curious-to-customer' is already used by "
        "sequences/from-curious-to-customer.yaml",
    ]


def test_gate_problems_are_shown_with_schema_problems_in_one_run(runner, workspace):
    write(workspace / "sequences" / "both.yaml", """
        steps:
          - id: first
            subjet: "One"
            template: curious-to-customer/welcome
          - id: second
            after: 2 dayz
            subject: "Two"
            template: curious-to-customer/welcome
            when: {clicked: frist, ready: true}
            wait_up_to: 3d
            otherwise: extra
          - id: first
            subject: "Three"
            template: curious-to-customer/welcome
    """)  # fmt: skip
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    found = [line for line in result.output.splitlines() if line.startswith("sequences/")]
    assert found == [
        "sequences/both.yaml:2: missing required key 'subject'",
        "sequences/both.yaml:3: unknown key 'subjet' (did you mean 'subject'?)",
        "sequences/both.yaml:6: after: bad duration '2 dayz': write a number and a unit, "
        "like 45m, 12h, 2d, 1w or '2 days'",
        "sequences/both.yaml:9: step 'second': when uses readiness but the sequence has no "
        "`readiness:` block, so the gate could never open",
        "sequences/both.yaml:9: step 'second': when.clicked names unknown step 'frist' "
        "(did you mean 'first'?)",
        "sequences/both.yaml:11: step 'second': otherwise names unknown step 'extra' "
        "(use a step id, skip or exit)",
        "sequences/both.yaml:12: duplicate step id 'first'",
    ]


def test_the_summary_counts_every_file(runner, workspace):
    write(workspace / "sequences" / "typo.yaml", """
        steps:
          - id: one
            subject: "One"
            template: curious-to-customer/welcome
            colour: red
    """)  # fmt: skip
    write(workspace / "sequences" / "unreadable.yaml", "steps: [\n")
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "4 sequences (2 with errors), 15 steps: 2 errors, 0 warnings"
    )


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("trigger: signpu", "2: trigger: unknown trigger 'signpu' (did you mean 'signup'?): "
         "use signup, manual, tag:<name> or completed:<sequence>"),
        ("trigger: tags:vip", "2: trigger: unknown trigger 'tags:vip' (did you mean 'tag:vip'?)"),
        ("trigger: whenever", "2: trigger: unknown trigger 'whenever': use signup, manual, "
         "tag:<name> or completed:<sequence>"),
        ("send_window: {hours: 9-5}", "2: hours: '9-5' does not look like 09:00-17:00"),
        ("send_window: {days: [mon, tues]}", "2: days: 'tues' should be 'mon', 'tue', 'wed'"),
        ("readiness: {points: {clik: 3}, ready_at: 5}",
         "2: points: unknown kind 'clik': use open, click or event:<name>"),
        ("readiness: {ready_at: 0}", "2: ready_at: 0 should be greater than or equal to 1"),
        ("reentry: maybe", "2: reentry: 'maybe' should be a valid boolean"),
        ("name: [a, b]", "2: name: should be a valid string"),
    ],
)  # fmt: skip
def test_messages_name_the_field_once(runner, workspace, written, message):
    write(workspace / "sequences" / "one.yaml", f"""
        description: one mistake
        {written}
        steps:
          - id: one
            subject: "One"
            template: curious-to-customer/welcome
    """)  # fmt: skip
    result = run_validate(runner, workspace)
    assert result.exit_code == 1
    assert f"sequences/one.yaml:{message}" in result.output
    field = message.split(": ")[1]
    assert f"{field}: {field}" not in result.output


def test_step_ids_and_empty_fields_are_explained(runner, workspace):
    write(workspace / "sequences" / "one.yaml", """
        steps: []
    """)  # fmt: skip
    write(workspace / "sequences" / "two.yaml", """
        steps:
          - id: Hello
            subject: ""
            template: curious-to-customer/welcome
    """)  # fmt: skip
    out = run_validate(runner, workspace).output
    assert "sequences/one.yaml:1: steps: a sequence needs at least one step" in out
    assert ("sequences/two.yaml:2: id: 'Hello' is not a step id: use lower-case letters, "
            "digits, '-' and '_'") in out  # fmt: skip
    assert "sequences/two.yaml:3: subject: must not be empty" in out


def test_each_problem_is_shown_once(runner, workspace):
    write(workspace / "sequences" / "typo.yaml", """
        name: typo
        trigger: signup
        steps:
          - {id: a, after: 0m, subjet: Hi, template: curious-to-customer/welcome}
    """)  # fmt: skip
    # a real process: the catalog's warnings go through logging, as they do for a user
    result = subprocess.run([sys.executable, "-m", "nurture", "--workspace", str(workspace),
                             "validate"], capture_output=True, text=True, timeout=120)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("unknown key 'subjet'") == 1, output
    assert "left out" not in output


@pytest.mark.parametrize(("text", "line", "message"), [
    ("name: x\nsteps:\n  - id: a\n    after: 0m\n   subject: Hi\n", 5,
     "YAML: this line is not indented as expected: check the indentation of this line against "
     "the one above"),
    ('name: x\nsteps:\n  - id: a\n    subject: "Hi\n    after: 0m\n', 4,
     "YAML: a quote opened on this line is never closed: end the value with the same quote"),
    ("name: x\n  trigger: signup\n", 2,
     "YAML: a ':' where none is expected: check the indentation of this line against the one "
     "above"),
])  # fmt: skip
def test_yaml_syntax_errors_are_a_plain_sentence_at_the_line_they_start(
    runner, workspace, text, line, message
):
    (workspace / "sequences" / "bad.yaml").write_text(text)
    result = runner.invoke(cli, ["--workspace", str(workspace), "validate"])
    assert result.exit_code == 1
    assert f"sequences/bad.yaml:{line}: {message}" in result.output, result.output
    assert "<block" not in result.output and "stream" not in result.output
