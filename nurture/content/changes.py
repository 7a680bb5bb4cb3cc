"""What changed between two versions of a workspace's sequences, step by step id.

Steps are matched by id, as enrolments are: a step whose id changed is a step removed
and another added, whatever it looks like (people waiting for the old id end their
enrolment), so a likely rename is reported as such, with both ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.content.durations import format_duration
from nurture.content.experiments import percent
from nurture.content.sequences import Catalog, Sequence, Step
from nurture.content.snapshot import LAYOUT_FILES, TEMPLATES


@dataclass(frozen=True)
class Change:
    sequence: str
    #: The step it is about; None for the sequence as a whole.
    step: str | None
    #: added, removed, delay, gate, template, subject, window, goal, trigger, order, sequence
    kind: str
    text: str


def _gate(step: Step) -> str:
    if step.when is None:
        return "no gate"
    when = ", ".join(f"{k}: {_yaml(v)}" for k, v in step.when.model_dump(exclude_none=True).items())
    wait = f", wait up to {format_duration(step.wait_up_to)}" if step.wait_up_to else ""
    other = f", otherwise {step.otherwise}" if step.otherwise else ""
    return f"when {{{when}}}{wait}{other}"


def _yaml(value: object) -> str:
    """A gate's value as it is written in the sequence file (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _arms(step: Step) -> str:
    """A step's variants as a line: 'A (weight 1), B (weight 1, subject 'Hi')'."""
    if not step.variants:
        return "none"
    return ", ".join(f"{v.name} (weight {v.weight:g}" + "".join(
        f", {k} {getattr(v, k)!r}" for k in ("subject", "preheader", "template")
        if getattr(v, k) is not None) + ")" for v in step.variants)  # fmt: skip


def _share(share: float | None) -> str:
    return percent(share) if share is not None else "none"


def _window(seq: Sequence) -> str:
    w = seq.send_window
    return "any time" if w is None else f"{','.join(w.days)} {w.hours}"


def _template_files(step: Step) -> list[str]:
    return [f"{TEMPLATES}/{step.template}{ext}" for ext in (".html", ".txt")]


def step_changes(
    name: str, old: Sequence, new: Sequence, old_files: dict[str, str], new_files: dict[str, str]
) -> list[Change]:
    """The changes of one sequence present in both versions."""
    out: list[Change] = []
    old_ids, new_ids = [s.id for s in old.steps], [s.id for s in new.steps]
    for i, step in enumerate(new.steps):
        before = old.step(step.id)
        if before is None:
            out.append(Change(name, step.id, "added", _added(old, step, i, old_ids)))
            continue
        if before.after != step.after:
            out.append(Change(name, step.id, "delay", f"delay {format_duration(before.after)} → "
                                                      f"{format_duration(step.after)}"))  # fmt: skip
        if _gate(before) != _gate(step):
            out.append(Change(name, step.id, "gate", f"gate: {_gate(before)} → {_gate(step)}"))
        if before.template != step.template:
            out.append(Change(name, step.id, "template",
                              f"template {before.template} → {step.template}"))  # fmt: skip
        elif any(old_files.get(p) != new_files.get(p) for p in _template_files(step)):
            out.append(Change(name, step.id, "template", f"template {step.template} edited"))
        if before.variants != step.variants:
            out.append(Change(name, step.id, "variants",
                              f"variants: {_arms(before)} → {_arms(step)}"))  # fmt: skip
        if before.subject != step.subject:
            out.append(
                Change(name, step.id, "subject", f"subject {before.subject!r} → {step.subject!r}")
            )
    for i, sid in enumerate(old_ids):
        if sid not in new_ids:
            out.append(Change(name, sid, "removed", _removed(new, old.steps[i], i, old_ids)))
    kept_old = [s for s in old_ids if s in new_ids]
    if kept_old != [s for s in new_ids if s in old_ids]:
        out.append(Change(name, None, "order", "steps reordered: " + ", ".join(new_ids)))
    for kind, before_text, after_text in (
        ("window", _window(old), _window(new)),
        ("goal", str(old.exit_when), str(new.exit_when)),
        ("trigger", old.trigger, new.trigger),
        ("readiness", str(old.readiness), str(new.readiness)),
        ("reentry", str(old.reentry), str(new.reentry)),
        ("holdout", _share(old.holdout), _share(new.holdout)),
    ):
        if before_text != after_text:
            out.append(Change(name, None, kind, f"{kind}: {before_text} → {after_text}"))
    return out


def _added(old: Sequence, step: Step, i: int, old_ids: list[str]) -> str:
    where = f"before {old_ids[i]}" if i < len(old_ids) else "at the end"
    return f"step {step.id} added ({where}, after {format_duration(step.after)})"


def _removed(new: Sequence, step: Step, i: int, old_ids: list[str]) -> str:
    twin = new.steps[i] if i < len(new.steps) else None
    if twin is not None and twin.id not in old_ids and twin.template == step.template:
        return (f"step {step.id} removed, step {twin.id} added in its place with the same "
                f"template (a rename? ids keep people in place: those waiting for "
                f"{step.id} end their enrolment)")  # fmt: skip
    return f"step {step.id} removed"


def changes(
    old: Catalog, new: Catalog, old_files: dict[str, str], new_files: dict[str, str]
) -> list[Change]:
    """Every change from `old` to `new`; files by path relative to the workspace."""
    out: list[Change] = []
    for name in sorted(set(old.sequences) | set(new.sequences)):
        before, after = old.get(name), new.get(name)
        if before is None:
            out.append(Change(name, None, "sequence", f"sequence {name} added"))
        elif after is None:
            out.append(Change(name, None, "sequence", f"sequence {name} removed (people in it "
                                                      "stay where they are, paused)"))  # fmt: skip
        else:
            out += step_changes(name, before, after, old_files, new_files)
            out += [Change(name, None, "layout", f"layout {p.rsplit('/', 1)[-1]} edited "
                           "(every email's frame; no one moves)")
                    for p in LAYOUT_FILES if old_files.get(p) != new_files.get(p)]  # fmt: skip
    return out
