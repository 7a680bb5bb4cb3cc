"""`nurture validate`: every problem of a workspace at once, sorted, with file and line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nurture.errors import SequenceError
from nurture.rendering import renderer_for
from nurture.sequences import Catalog, catalog_for
from nurture.settings import Settings
from nurture.yamlmarks import load_with_lines


def _steps(settings: Settings, catalog: Catalog) -> Iterator[tuple[str, int, Any, Any]]:
    """(path, line, template, subject) of every step, also in files that failed to load,
    so a marketer sees template problems and YAML problems in one run."""
    loaded = {seq.path for seq in catalog.sequences.values()}
    for seq in catalog.sequences.values():
        for step in seq.steps:
            yield seq.path, step.line, step.template, step.subject
    root = settings.sequences_dir.parent
    for file in sorted(settings.sequences_dir.glob("*.y*ml")):
        shown = str(file.relative_to(root))
        if shown in loaded:
            continue
        try:
            data, lines = load_with_lines(file.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001, S112 - already reported by the catalog
            continue
        steps = data.get("steps") if isinstance(data, dict) else None
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, dict):
                yield shown, lines.get(("steps", i), 0), step.get("template"), step.get("subject")


def validate_workspace(settings: Settings) -> list[SequenceError]:
    problems: list[SequenceError] = []
    if not settings.sequences_dir.is_dir():
        return [SequenceError("sequences", None, "no sequences/ folder in this workspace")]
    catalog = catalog_for(settings.sequences_dir)  # the command reuses it for its summary
    problems.extend(catalog.problems)
    renderer = renderer_for(settings.templates_dir)
    problems.extend(renderer.check_layout())
    for path, line, template, subject in _steps(settings, catalog):
        if isinstance(template, str):
            problems.extend(renderer.check(template, SequenceError(path, line, "")))
        if isinstance(subject, str):
            problems.extend(renderer.check_string(subject, path, line))
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
