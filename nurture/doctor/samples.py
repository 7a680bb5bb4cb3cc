"""The emails themselves, as sent: every sequence step and the latest newsletter issue
rendered for a sample subscriber, each carrying both one-click headers and a text part."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

from nurture.broadcast.operations import preview as preview_issue
from nurture.content.rendering import sample_context
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import compose_step
from nurture.doctor.report import Check, failed, passed, warned
from nurture.errors import NurtureError
from nurture.settings import Settings

NAME = "emails"


def _samples(settings: Settings) -> Iterator[tuple[str, bytes]]:
    view = sample_context()["subscriber"]
    for seq in catalog_for(settings.sequences_dir).sequences.values():
        for step in seq.steps:
            yield f"{seq.name}/{step.id}", compose_step(settings, seq, step, view, 0).envelope.data
    issues = sorted((settings.workspace / "newsletters").glob("*.md"))
    if issues:
        source = str(issues[-1].relative_to(settings.workspace))
        yield source, preview_issue(settings, source).envelope.data


def _problem(data: bytes) -> str | None:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not msg["List-Unsubscribe"]:
        return "no List-Unsubscribe header"
    if msg["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click":
        return "no List-Unsubscribe-Post: List-Unsubscribe=One-Click header"
    text = msg.get_body(preferencelist=("plain",))
    if text is None or not text.get_content().strip():
        return "no text part"
    return None


def check_samples(settings: Settings) -> Check:
    problems, count = [], 0
    try:
        for where, data in _samples(settings):
            count += 1
            problem = _problem(data)
            if problem:
                problems.append(f"{where}: {problem}")
    except NurtureError as e:
        return failed(NAME, f"an email does not render: {e}", "run `nurture validate`")
    if problems:
        return failed(NAME, "; ".join(problems), "send every email through nurture's templates")
    if not count:
        return warned(NAME, "no sequence step or newsletter issue to check", "write one")
    return passed(NAME, f"{count} emails carry both unsubscribe headers and a text part")
