"""Numbers no one means: a 400-digit weight, `.nan`, `.inf`. Each is one clear error at
its line; the commands that go on without the file do, and no public page fails."""

from __future__ import annotations

import pytest

from nurture.cli import cli
from nurture.content import sequences
from nurture.web import create_app
from tests.helpers.experiments import use_sequences

HUGE = "9" * 400
ABSURD = f"""\
name: ab
trigger: tag:ab
steps:
  - id: hello
    subject: "Hello A"
    preheader: "A first look."
    template: curious-to-customer/welcome
    variants:
      - {{name: A, weight: {HUGE}}}
      - {{name: B, weight: .nan, subject: "Hello B"}}
      - {{name: C, weight: .inf, subject: "Hello C"}}
"""


def test_absurd_weights_are_refused_at_their_line(runner, env, workspace, settings):
    use_sequences(workspace, ab=ABSURD)
    result = runner.invoke(cli, ["validate"], env=env)
    assert result.exit_code == 1, result.output
    said = [line for line in result.output.splitlines() if line.startswith("sequences/ab.yaml:")]
    assert said == [
        "sequences/ab.yaml:9: weight: must be a positive number up to 1000000",
        "sequences/ab.yaml:10: weight: must be a positive number up to 1000000",
        "sequences/ab.yaml:11: weight: must be a positive number up to 1000000",
    ]
    assert "Traceback" not in result.output and HUGE not in result.output
    sent = runner.invoke(cli, ["send-due"], env=env)
    assert sent.exit_code == 0, sent.output
    page = create_app(settings).test_client().get("/subscribe")
    assert page.status_code == 200


def test_a_file_that_cannot_be_loaded_leaves_the_signup_page_up(
    settings, workspace, monkeypatch: pytest.MonkeyPatch
):
    def broken(*_: object) -> None:
        raise RecursionError("a file deeper than any check foresaw")

    monkeypatch.setattr(sequences, "load_sequence", broken)
    page = create_app(settings).test_client().get("/subscribe")
    assert page.status_code == 200
    assert "Subscribe" in page.get_data(as_text=True)
