"""Experiment test data: sequences with variants and a holdout, and reading back which
variant a reader received (from the sink) or would receive (from `simulate`)."""

from __future__ import annotations

import re
from pathlib import Path

from nurture.cli import cli

#: A step with two variants: B has its own subject and template.
AB = """\
name: ab
trigger: tag:ab
goal: {event: purchased, within: 3d}
steps:
  - id: hello
    after: 0m
    subject: "Hello A"
    preheader: "A first look."
    template: curious-to-customer/welcome
    variants:
      - {name: A, weight: 50%}
      - {name: B, weight: 50%, subject: "Hello B", template: curious-to-customer/audience}
  - id: later
    after: 1d
    subject: "Later"
    preheader: "A second look."
    template: curious-to-customer/teach
"""
#: A sequence that holds out a quarter of its subscribers.
HELD = """\
name: held
trigger: tag:held
holdout: 25%
goal: {event: purchased}
steps:
  - {id: one, after: 0m, subject: "One", preheader: "First.", template: curious-to-customer/welcome}
  - {id: two, after: 1d, subject: "Two", preheader: "Second.", template: curious-to-customer/teach}
"""
#: What each variant's email shows: its template's heading.
HEADINGS = {"A": "Two jobs that look like one", "B": "Everyone"}


def use_sequences(workspace: Path, **files: str) -> None:
    """The workspace's sequences become these (name -> YAML); the example's templates stay."""
    for old in (workspace / "sequences").glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (workspace / "sequences" / f"{name}.yaml").write_text(text)


def subject_variant(received) -> str:
    """'A' or 'B' from a received email's subject ('Hello B', 'News A')."""
    return str(received.message["Subject"]).rsplit(" ", 1)[-1]


def received_variants(sink) -> dict[str, str]:
    return {m.recipients[0]: subject_variant(m) for m in list(sink.messages)}


def simulated(runner, env: dict[str, str], sequence: str, email: str) -> list[str]:
    """`nurture simulate SEQUENCE --email EMAIL`: its timeline rows, one string each."""
    result = runner.invoke(cli, ["simulate", sequence, "--email", email, "--days", "3"], env=env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[1:]


def simulated_variant(runner, env: dict[str, str], sequence: str, step: str, email: str) -> str:
    """The variant `simulate` says the address gets at `step`."""
    row = next(r for r in simulated(runner, env, sequence, email) if f" {step} " in r)
    return re.search(r"\[variant (\w+)", row).group(1)


def tracking_paths(received) -> tuple[str, str]:
    """(open pixel, first tracked link) of an email, as paths on the web app."""
    html = received.message.get_body(("html",)).get_content()
    pixel = re.search(r'src="https://crumb\.example(/o/[^"]+)"', html).group(1)
    link = re.search(r'href="https://crumb\.example(/c/[^"]+)"', html).group(1)
    return pixel, link
