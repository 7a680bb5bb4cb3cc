"""A workspace with topics: a `tips` sequence in the `tips` topic, the newsletter, and a
signup form that offers both; and the reader's side of it (their links, their page)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import POSTAL, SENDER

TOPICS_TOML = f"""\
from = "{SENDER}"
postal_address = "{POSTAL}"
signup_topics = ["newsletter", "tips"]

[topics]
newsletter = "The monthly newsletter"
tips = "Baking tips"
"""

TIPS = """\
name: tips
trigger: signup
topic: tips
steps:
  - id: first
    after: 0m
    subject: "Tip one"
    template: tips/note
  - id: second
    after: 2d
    subject: "Tip two"
    template: tips/note
  - id: third
    after: 2d
    subject: "Tip three"
    template: tips/note
"""


def with_topics(workspace: Path) -> Path:
    """Turn the example workspace into one with topics and a single `tips` sequence."""
    (workspace / "nurture.toml").write_text(TOPICS_TOML)
    for name in ("from-curious-to-customer", "win-back"):
        (workspace / "sequences" / f"{name}.yaml").unlink()
    (workspace / "sequences" / "tips.yaml").write_text(TIPS)
    notes = workspace / "templates" / "email" / "tips"
    notes.mkdir()
    (notes / "note.html").write_text("<p>A baking tip for {{ subscriber.email }}.</p>\n")
    (notes / "note.txt").write_text("A baking tip for {{ subscriber.email }}.\n")
    return workspace


def subjects(sink, address: str) -> list[str]:
    return [str(m.message["Subject"]) for m in sink.to(address)]


def unsubscribe_path(received) -> str:
    """The path of an email's List-Unsubscribe link (the preference centre's page)."""
    header = received.message["List-Unsubscribe"]
    return re.search(r"<https://crumb\.example(/unsubscribe/[\w.-]+)>", header).group(1)


def issue(tmp_path: Path, subject: str, topic: str | None = None) -> Path:
    """A newsletter issue file, in `topic` (else the newsletter)."""
    path = tmp_path / f"{subject.lower().replace(' ', '-')}.md"
    line = f"topic: {topic}\n" if topic else ""
    path.write_text(f"---\nsubject: {subject}\n{line}---\nNews for {{{{ subscriber.email }}}}.\n")
    return path
