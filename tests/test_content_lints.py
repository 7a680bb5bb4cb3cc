"""`validate` lints the rendered emails: links, alt text, link text, text part, lang,
subject length and preheader; `--check-links` asks each URL (a local server here)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from nurture.cli import cli
from tests.helpers.linkserver import LinkServer

WELCOME = Path("templates/email/curious-to-customer/welcome.html")
SEQUENCE = Path("sequences/from-curious-to-customer.yaml")


def validate(runner, ws: Path, *args: str):
    clean = {k: None for k in os.environ if k.startswith("NURTURE_")}
    return runner.invoke(cli, ["--workspace", str(ws), "validate", *args], env=clean)


def add_line(path: Path, text: str) -> int:
    """Append a line to a template; its 1-based number."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, text]) + "\n")
    return len(lines) + 1


def test_the_example_has_no_lint(runner, workspace):
    result = validate(runner, workspace)
    assert result.exit_code == 0
    assert result.output.strip().splitlines() == ["2 sequences, 14 steps: 0 errors, 0 warnings"]


@pytest.mark.parametrize(("href", "why"), [
    ("/pricing", "is relative: a link in an email must be absolute (https://…)"),
    ("crumb.example/pricing", "is relative: a link in an email must be absolute (https://…)"),
    ("https://crumb example/pricing", "contains a space (write %20)"),
    ("https:///pricing", "has no valid host name (like https://example.com/page)"),
    ("https://crumb.example:http/", "has a malformed port"),
    ("javascript:alert(1)", "uses javascript: (use https://, mailto: or tel:)"),
    ("mailto:", "has no address after mailto:"),
])  # fmt: skip
def test_a_relative_or_malformed_link_is_an_error_at_its_line(runner, workspace, href, why):
    line = add_line(workspace / WELCOME, f'<p>See <a href="{href}">our prices</a>.</p>')
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert f"{WELCOME}:{line}: link '{href}' {why}" in result.output


def test_absolute_mail_and_phone_links_pass(runner, workspace):
    add_line(workspace / WELCOME, '<p><a href="mailto:maya@crumb.example">Write to Maya</a> or '
             '<a href="tel:+441170000000">call the shop</a>.</p>')  # fmt: skip
    assert validate(runner, workspace).output.strip().endswith("0 errors, 0 warnings")


def test_an_image_without_alt_and_a_click_here_link_are_warnings(runner, workspace):
    img = add_line(workspace / WELCOME, '<img src="https://crumb.example/buns.jpg" width="300">')
    here = add_line(
        workspace / WELCOME, '<p><a href="https://crumb.example/menu">Click here</a></p>'
    )
    add_line(workspace / WELCOME, '<img src="https://crumb.example/line.png" alt="">')  # decorative
    result = validate(runner, workspace)
    assert result.exit_code == 0  # warnings only
    out = result.output
    assert (f"{WELCOME}:{img}: warning: image 'https://crumb.example/buns.jpg' has no alt text"
            in out)  # fmt: skip
    assert (f"{WELCOME}:{here}: warning: link text 'Click here' says nothing about where it "
            "leads") in out  # fmt: skip
    assert "line.png" not in out
    assert out.strip().endswith("0 errors, 2 warnings")


def test_an_empty_text_part_is_an_error(runner, workspace):
    (workspace / WELCOME.with_suffix(".txt")).write_text("{# nothing yet #}\n\n")
    result = validate(runner, workspace)
    assert result.exit_code == 1
    assert f"{WELCOME.with_suffix('.txt')}: the text part is empty" in result.output


def test_a_layout_without_lang_is_a_warning_at_its_html_tag(runner, workspace):
    layout = workspace / "templates" / "email" / "_layout.html"
    layout.write_text(layout.read_text().replace('<html lang="en">', "<html>"))
    result = validate(runner, workspace)
    assert result.exit_code == 0
    assert (
        "templates/email/_layout.html:2: warning: the layout's <html> has no lang" in result.output
    )


def test_a_long_subject_and_a_missing_preheader_are_warnings_at_the_step(runner, workspace):
    seq = workspace / SEQUENCE
    text = seq.read_text()
    long = "Who is your business really for? A long look at the people who buy, and why they do"
    text = text.replace('subject: "Who is your business really for?"', f'subject: "{long}"')
    text = text.replace(
        '    preheader: "A signup box alone gets few names; a good reason gets many."\n', ""
    )
    seq.write_text(text)
    lines = text.splitlines()
    subject_line = lines.index(f'    subject: "{long}"') + 1
    step_line = lines.index("  - id: capture-leads") + 1
    result = validate(runner, workspace)
    assert result.exit_code == 0
    assert (f"{SEQUENCE}:{subject_line}: warning: step 'know-your-audience': the subject is "
            f"{len(long)} characters; inboxes show about 78") in result.output  # fmt: skip
    assert (f"{SEQUENCE}:{step_line}: warning: step 'capture-leads' has no preheader"
            in result.output)  # fmt: skip


def test_the_preheader_reaches_the_reader(runner, env, sink):
    assert runner.invoke(cli, ["subscribers", "add", "ana@example.com", "--confirmed"],
                         env=env).exit_code == 0  # fmt: skip
    assert runner.invoke(cli, ["send-due"], env=env).exit_code == 0
    html = sink.to("ana@example.com")[0].message.get_body(("html",)).get_content()
    assert "Two stories, two different problems, and which one is yours." in html


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_links_reports_dead_links_as_warnings_and_is_off_by_default(runner, workspace):
    with LinkServer() as server:
        dead = f"http://127.0.0.1:{_closed_port()}/shop"
        lines = {path: add_line(workspace / WELCOME, f'<p><a href="{server.url}{path}">Page {path}</a></p>')
                 for path in ("/ok", "/moved", "/no-head", "/gone", "/broken")}  # fmt: skip
        unreachable = add_line(workspace / WELCOME, f'<p><a href="{dead}">Our shop</a></p>')
        assert validate(runner, workspace).exit_code == 0
        assert sum(server.hits.values()) == 0  # off by default: no request made

        result = validate(runner, workspace, "--check-links")
    out = result.output
    assert result.exit_code == 0  # dead links are warnings
    assert (f"{WELCOME}:{lines['/gone']}: warning: link {server.url}/gone answered 404"
            in out)  # fmt: skip
    assert f"{WELCOME}:{lines['/broken']}: warning: link {server.url}/broken answered 500" in out
    assert f"{WELCOME}:{unreachable}: warning: link {dead} could not be reached" in out
    for fine in ("/ok", "/moved", "/no-head"):
        assert f"{server.url}{fine} " not in out
    assert server.hits[("HEAD", "/moved")] == 1 and server.hits[("HEAD", "/ok")] >= 1
    assert server.hits[("GET", "/no-head")] == 1  # HEAD refused: asked again with GET
