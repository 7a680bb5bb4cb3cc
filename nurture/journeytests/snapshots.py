"""Snapshots: every email each persona receives, rendered to files a reviewer can diff.

`sequences/tests/__snapshots__/<persona>/<step>.html` and `.txt` hold what the persona
was sent, composed by the same code as a real send with click tracking off (links show
where they lead) and the signed tokens in links replaced by `TOKEN`, the base URL by
`SNAPSHOT_BASE_URL`, so a render is the same on every machine and every run.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path

from nurture.content.rendering import SubscriberView
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import compose_step
from nurture.errors import SequenceError
from nurture.journeytests.run import Outcome
from nurture.settings import Settings

#: The base URL links are shown under in snapshots (NURTURE_BASE_URL differs by machine).
SNAPSHOT_BASE_URL = "https://nurture.example"
#: Lines of unified diff shown per changed file; the file itself holds the rest.
DIFF_LINES = 24
_TOKEN = re.compile(re.escape(SNAPSHOT_BASE_URL) + r"/(unsubscribe|confirm|c|o)/[\w.\-]+")


def render_snapshots(settings: Settings, outcome: Outcome) -> dict[Path, str]:
    """{file: content} of every email every persona received in the sequence tested."""
    fixed = replace(settings, base_url=SNAPSHOT_BASE_URL, tracking=False,
                    secret_key="snapshot", sender=settings.sender or "Preview <preview@example.com>")  # noqa: S106  # fmt: skip
    catalog = catalog_for(settings.sequences_dir)
    folder = settings.sequences_dir / "tests" / "__snapshots__"
    files: dict[Path, str] = {}
    for test, persona, journey in outcome.journeys:
        seq = catalog.sequences[test.sequence]
        view = SubscriberView(email=persona.email, first_name=persona.first_name,
                              timezone=persona.zone.key, attributes=dict(persona.attributes),
                              tags=persona.tags)  # fmt: skip
        for row in journey.rows:
            step = seq.step(row.step_id) if row.status == "sent" else None
            if step is None:
                continue  # an activity, a skipped step, or another sequence's email
            rendered = compose_step(fixed, seq, step, view, 0).rendered
            for ext, body in (("html", rendered.html), ("txt", rendered.text)):
                files[folder / persona.name / f"{step.id}.{ext}"] = _TOKEN.sub(
                    lambda m: f"{SNAPSHOT_BASE_URL}/{m.group(1)}/TOKEN", body
                )
    return files


def check_snapshots(settings: Settings, outcome: Outcome, *, update: bool) -> list[str]:
    """Compare the renders with the files; record each change as a failure unless
    `update`, then write them. Returns notes on what was written or removed."""
    if not outcome.journeys:
        return []
    root = settings.sequences_dir.parent
    folder = settings.sequences_dir / "tests" / "__snapshots__"
    made = render_snapshots(settings, outcome)
    notes: list[str] = []
    for path, body in sorted(made.items()):
        shown = str(path.relative_to(root))
        outcome.checks += 1
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        if old == body:
            continue
        if old is None or update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
            notes.append(f"{shown}: {'new snapshot written' if old is None else 'updated'}")
            continue
        outcome.failures.append(SequenceError(shown, None, "snapshot changed (accept it with "
                                              "`nurture test --snapshots --update`):\n"
                                              + _diff(old, body, shown)))  # fmt: skip
    stale = sorted(p for p in folder.rglob("*") if p.is_file() and p not in made)
    if outcome.unreadable:
        stale = []  # a persona of a file that could not be read still has its snapshots
    for path in stale:
        shown = str(path.relative_to(root))
        if update:
            path.unlink()
            notes.append(f"{shown}: removed (no persona receives it any more)")
        else:
            outcome.failures.append(SequenceError(shown, None, "no persona receives this email "
                                                  "any more (remove it with `nurture test "
                                                  "--snapshots --update`)"))  # fmt: skip
    return notes


def _diff(old: str, new: str, shown: str) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{shown}",
                                      f"b/{shown}", n=1, lineterm=""))  # fmt: skip
    more = len(lines) - DIFF_LINES
    shown_lines = lines[:DIFF_LINES] + ([f"… ({more} more lines)"] if more > 0 else [])
    return "\n".join(shown_lines)
