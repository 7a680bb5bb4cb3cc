"""Files and expressions written to exhaust the parsers: alias bombs, self-referencing
aliases, and nesting deeper than a recursive parser can follow. Each is one clear
error at its line, found with little work, and never a traceback or a 500 page."""

from __future__ import annotations

import textwrap
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from nurture.cli import cli
from nurture.web import create_app
from tests.helpers.web import link_in, post_signup

#: Nine lists of nine copies of the one before, six times over: 531,441 strings once
#: every alias is expanded, from a file of about 300 bytes.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
)
DEEP = 3000


def validate(runner, workspace: Path):
    return runner.invoke(cli, ["--workspace", str(workspace), "validate"],
                         env={"NURTURE_DATABASE_URL": "sqlite://"})  # fmt: skip


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_alias_bomb_is_refused_at_its_first_anchor_without_expanding_it(runner, workspace):
    assert len(BOMB) < 400
    write(workspace / "sequences" / "bomb.yaml", "name: bomb\n" + BOMB)
    tracemalloc.start()
    try:
        result = validate(runner, workspace)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1
    assert ("sequences/bomb.yaml:2: YAML: anchors and aliases (&name, *name) are not allowed "
            "here: write the value out in full") in result.output  # fmt: skip
    assert peak < 30_000_000, "the aliases were expanded"
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: loop\nsteps: &a [*a]\n", 2, "anchors and aliases (&name, *name) are not allowed"),
        ("name: deep\nsteps:\n  - " + "[" * DEEP + "]" * DEEP + "\n", 3,
         "nested more than 40 levels deep"),
        ("name: keys\nsteps:\n  - ? [a]\n    : b\n", 3,
         "a key must be a plain value, not a list or mapping"),
    ],
)  # fmt: skip
def test_recursive_and_deep_yaml_is_one_error_at_its_line(runner, workspace, text, line, message):
    write(workspace / "sequences" / "odd.yaml", text)
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert f"sequences/odd.yaml:{line}: YAML: {message}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_broken_sequence_file_leaves_the_web_side_working(
    settings, workspace, sink, caplog
):  # fmt: skip
    write(workspace / "sequences" / "loop.yaml", "name: loop\nsteps: &a [*a]\n")
    write(workspace / "sequences" / "bomb.yaml", "name: bomb\n" + BOMB)
    write(workspace / "sequences" / "bread-course.yaml",
          "trigger: manual\nsteps:\n  - id: one\n    subject: Bread\n"
          "    template: curious-to-customer/welcome\n")  # fmt: skip
    app = create_app(replace(settings, subscribe_limit="1000 per minute", signup_seconds=0))
    client = app.test_client()
    try:
        assert client.get("/subscribe").status_code == 200
        offered = client.get("/subscribe?sequence=bread-course")
        assert offered.status_code == 200 and 'value="bread-course"' in offered.text
        broken = client.get("/subscribe?sequence=loop")
        assert broken.status_code == 200 and 'value="loop"' not in broken.text
        refused = post_signup(client, app, json=True, sequence="loop")
        assert refused.status_code == 400 and "loop" in refused.get_json()["error"]
        assert post_signup(client, app, sequence="bread-course").status_code == 200
        confirmed = client.post(link_in(sink.to("ana@example.com")[0], "confirm"))
        assert confirmed.status_code == 200
    finally:
        app.extensions["nurture"].background.stop()
    logged = [r.getMessage() for r in caplog.records if r.name == "nurture.content.sequences"]
    assert any(m.startswith("sequences/loop.yaml:2: YAML: anchors") for m in logged)


@pytest.mark.parametrize(
    ("front", "line", "message"),
    [
        (BOMB, 2, "front matter: anchors and aliases (&name, *name) are not allowed here"),
        ("x: " + "{a: " * DEEP + "1" + "}" * DEEP, 2, "front matter: nested more than 40"),
    ],
)
def test_front_matter_refuses_aliases_and_depth(runner, env, tmp_path, front, line, message):
    issue = write(tmp_path / "issue.md", f"---\nsubject: Hi\n{front}\n---\nHello\n")
    tracemalloc.start()
    try:
        result = runner.invoke(cli, ["broadcast", "send", str(issue), "--dry-run"], env=env)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1
    assert peak < 30_000_000, "the aliases were expanded"
    assert f"{issue}:{line + 1}: {message}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("segment", "position", "message"),
    [
        ("(" * DEEP + "ready" + ")" * DEEP, 33, "more than 32 levels of parentheses and 'not'"),
        ("not " * DEEP + "ready", 129, "more than 32 levels of parentheses and 'not'"),
        (" or ".join(f"tag:t{i}" for i in range(DEEP)),
         len(" or ".join(f"tag:t{i}" for i in range(200))) + 5, "more than 200 terms"),
    ],
)  # fmt: skip
def test_a_deep_or_huge_segment_is_refused_where_it_goes_wrong(runner, env, tmp_path, segment,
                                                               position, message):  # fmt: skip
    issue = write(tmp_path / "issue.md", "---\nsubject: Hi\n---\nHello\n")
    for args, source in (
        (["--segment", segment], issue),
        ([], write(tmp_path / "segmented.md", f'---\nsubject: Hi\nsegment: "{segment}"\n---\nHi\n')),
    ):  # fmt: skip
        result = runner.invoke(cli, ["broadcast", "send", str(source), "--dry-run", *args], env=env)
        assert result.exit_code == 1
        assert f"segment: {message} at position {position}" in result.output
        shown, caret = result.output.splitlines()[-2:]
        assert len(shown) < 80, "a long segment is quoted around the mistake only"
        assert shown[len(caret) - 1] == segment[position - 1]
        assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% if true %}" * DEEP + "x" + "{% endif %}" * DEEP, "more than 12 nested blocks"),
        ("{{ " + "(" * DEEP + "1" + ")" * DEEP + " }}", "more than 20 nested brackets"),
        ("{{ " + " + ".join(["1"] * DEEP) + " }}", "a tag longer than 150 words and symbols"),
        ("{{ 1" + "|abs" * DEEP + " }}", "a tag longer than 150 words and symbols"),
    ],
)
def test_templates_nested_past_what_jinja_can_compile_are_syntax_errors(
    runner, workspace, env, tmp_path, source, message
):  # fmt: skip
    welcome = workspace / "templates" / "email" / "curious-to-customer" / "welcome.html"
    welcome.write_text("<p>Hello</p>\n\n" + source + "\n")
    result = validate(runner, workspace)
    assert result.exit_code == 1
    shown = "templates/email/curious-to-customer/welcome.html"
    assert f"{shown}:3: template syntax: {message}" in result.output
    issue = write(tmp_path / "issue.md", "---\nsubject: Hi\n---\nHello\n\n" + source + "\n")
    result = runner.invoke(cli, ["broadcast", "send", str(issue), "--dry-run"], env=env)
    assert result.exit_code == 1
    assert f"{issue}:6: {message}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_templates_within_the_limits_still_render(runner, workspace):
    welcome = workspace / "templates" / "email" / "curious-to-customer" / "welcome.html"
    nested = "{% for i in [1] %}{% if i %}" * 6 + "<p>x</p>" + "{% endif %}{% endfor %}" * 6
    welcome.write_text(
        textwrap.dedent(f"""
        <p>{{{{ {"(" * 20}1{")" * 20} }}}}</p>
        {nested}
        <p>{{{{ {" + ".join(["1"] * 70)} }}}}</p>
    """)
    )
    result = validate(runner, workspace)
    assert result.exit_code == 0, result.output


def test_nurture_toml_nested_too_deeply_is_a_settings_error(runner, workspace):
    (workspace / "nurture.toml").write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert f"{workspace / 'nurture.toml'}: values are nested too deeply" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999999999999999999d", "after: bad duration '99999999999999999999d'"),
        ("999999999w", "after: duration '999999999w' is longer than ten years: is a digit "
         "too many?"),
        ("!!timestamp soon", "YAML: 'soon' is not a valid timestamp"),
        ("!!int many", "YAML: 'many' is not a valid int"),
    ],
)  # fmt: skip
def test_values_python_cannot_hold_are_one_error_at_their_line(runner, workspace, value,
                                                                message):  # fmt: skip
    write(workspace / "sequences" / "odd.yaml",
          "steps:\n  - id: one\n    subject: Hi\n    template: curious-to-customer/welcome\n"
          f"    after: {value}\n")  # fmt: skip
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert f"sequences/odd.yaml:5: {message}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
