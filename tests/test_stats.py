"""`nurture stats`: per-step counts of people, the education-to-sales funnel, the report."""

from __future__ import annotations

import re

from nurture.cli import cli
from nurture.web import create_app
from tests.helpers.journeys import BROWSER


def test_stats_count_people_and_draw_the_funnel(runner, env, sink, settings, tmp_path):
    for email in ("ana@example.com", "bo@example.com", "cy@example.com"):
        runner.invoke(cli, ["subscribers", "add", email, "--confirmed"], env=env)
    assert runner.invoke(cli, ["send-due"], env=env).exit_code == 0
    client = create_app(settings).test_client()
    for received in sink.messages[:2]:  # two people click, one of them twice; a bot once
        html = received.message.get_body(("html",)).get_content()
        url = re.search(r'href="https://crumb\.example(/c/[^"]+)"', html).group(1)
        client.get(url, headers={"User-Agent": BROWSER})
    client.get(url, headers={"User-Agent": BROWSER})
    client.get(url, headers={"User-Agent": "Barracuda link scanner"})

    report = tmp_path / "report.html"
    written = runner.invoke(cli, ["stats", "--html", str(report)], env=env)
    assert written.exit_code == 0, written.output
    assert written.output == f"Wrote the report to {report}.\n"  # not the text report too
    result = runner.invoke(cli, ["stats"], env=env)
    assert result.exit_code == 0, result.output
    welcome = next(line for line in result.output.splitlines() if "welcome" in line).split()
    # step, stage, sent, pending, failed, skipped, cancelled, opened, clicked, unsub, bounced
    assert welcome[:2] == ["welcome", "education"]
    assert [int(x) for x in welcome[2:]] == [3, 0, 0, 0, 0, 2, 2, 0, 0]
    assert "funnel: entered 3 -> finished education 0" in result.output
    page = report.read_text()
    assert "<svg" in page and "from-curious-to-customer" in page
    assert re.search(r">entered</text>", page) and ">3\n" in page or ">3<" in page
