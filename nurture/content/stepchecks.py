"""Checks across the steps of a sequence file, made on its data as written.

They run on whatever parsed, even when other fields have schema errors, so a marketer
sees every problem in one run, each at the line of the field at fault: step ids
written twice, and gates that name unknown or later steps or could never open.
"""

from __future__ import annotations

import difflib
from typing import Any

from nurture.content.experiments import check_variants
from nurture.content.yamlmarks import Path_, line_for
from nurture.errors import SequenceError


def check_steps(data: dict[str, Any], lines: dict[Path_, int], shown: str) -> list[SequenceError]:
    """Every cross-step problem of one file's data (`lines` from `load_with_lines`)."""
    steps = data.get("steps")
    items = [(i, s) for i, s in enumerate(steps) if isinstance(s, dict)] if isinstance(
        steps, list) else []  # fmt: skip
    first: dict[str, int] = {}  # step id -> its index in the file
    problems: list[SequenceError] = []
    for i, step in items:
        sid = step.get("id")
        if isinstance(sid, str) and sid in first:
            line = line_for(lines, ("steps", i, "id"))
            problems.append(SequenceError(shown, line, f"duplicate step id '{sid}'"))
        elif isinstance(sid, str):
            first[sid] = i
    for i, step in items:
        problems.extend(_gate(step, i, first, data.get("readiness") is not None, lines, shown))
        sid = step.get("id")
        label = f"step '{sid}': " if isinstance(sid, str) else ""
        problems.extend(check_variants(step.get("variants"), lines, shown,
                                       ("steps", i, "variants"), label))  # fmt: skip
    return problems


def _gate(
    step: dict[str, Any],
    index: int,
    first: dict[str, int],
    has_readiness: bool,
    lines: dict[Path_, int],
    shown: str,
) -> list[SequenceError]:
    problems: list[SequenceError] = []
    sid = step.get("id")
    label = f"step '{sid}': " if isinstance(sid, str) else ""

    def problem(keys: tuple[str, ...], message: str) -> None:
        line = line_for(lines, ("steps", index, *keys))
        problems.append(SequenceError(shown, line, label + message))

    when, wait, otherwise = step.get("when"), step.get("wait_up_to"), step.get("otherwise")
    if when is None and (wait is not None or otherwise is not None):
        problem(("wait_up_to",) if wait is not None else ("otherwise",),
                "wait_up_to and otherwise only make sense with a `when` gate")  # fmt: skip
    if otherwise is not None and wait is None:
        problem(("otherwise",), "otherwise needs wait_up_to: how long to wait at the gate first")
    if isinstance(when, dict):
        for key in ("clicked", "opened"):
            target = when.get(key)
            if not isinstance(target, str):
                continue
            if target not in first:
                hint = difflib.get_close_matches(target, list(first), n=1)
                problem(("when", key), f"when.{key} names unknown step '{target}'"
                        + (f" (did you mean '{hint[0]}'?)" if hint else ""))  # fmt: skip
            elif first[target] >= index:
                problem(("when", key), f"when.{key} names '{target}', which is not sent "
                        "before this step, so the gate could never open")  # fmt: skip
        uses = next((k for k in ("ready", "score_at_least") if when.get(k) is not None), None)
        if uses and not has_readiness:
            problem(("when", uses), "when uses readiness but the sequence has no `readiness:` "
                    "block, so the gate could never open")  # fmt: skip
    if isinstance(otherwise, str) and otherwise not in ("skip", "exit"):
        if otherwise not in first:
            problem(("otherwise",), f"otherwise names unknown step '{otherwise}' "
                    "(use a step id, skip or exit)")  # fmt: skip
        elif otherwise == sid:
            problem(("otherwise",), "otherwise cannot send the subscriber back to the same gate")
    return problems
