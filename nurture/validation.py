"""`nurture validate`: every problem of a workspace at once, sorted, with file and line."""

from __future__ import annotations

from nurture.compose import renderer_for
from nurture.errors import SequenceError
from nurture.sequences import load_catalog
from nurture.settings import Settings


def validate_workspace(settings: Settings) -> list[SequenceError]:
    problems: list[SequenceError] = []
    if not settings.sequences_dir.is_dir():
        return [SequenceError("sequences", None, "no sequences/ folder in this workspace")]
    catalog = load_catalog(settings.sequences_dir)
    problems.extend(catalog.problems)
    renderer = renderer_for(settings.templates_dir)
    problems.extend(renderer.check_layout())
    for seq in catalog.sequences.values():
        for step in seq.steps:
            where = SequenceError(seq.path, step.line, "")
            problems.extend(renderer.check(step.template, where))
            problems.extend(renderer.check_string(step.subject, seq.path, step.line))
    if not settings.sender:
        problems.append(SequenceError("nurture.toml", None,
            "NURTURE_FROM is not set: no email can be sent without a sender "
            "(e.g. from = \"Crumb & Co <hello@crumb.example>\")"))  # fmt: skip
    if not settings.postal_address:
        problems.append(SequenceError("nurture.toml", None,
            "NURTURE_POSTAL_ADDRESS is not set: bulk email law (CAN-SPAM) wants a postal "
            "address in every email", warning=True))  # fmt: skip
    unique = {str(p): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.warning, p.path, p.line or 0, p.message))
