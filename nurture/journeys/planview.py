"""`nurture plan`'s output: text for people, JSON for tools."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from nurture.journeys.plan import HORIZON, Plan


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "baseline": plan.baseline,
        "moves_people": plan.moves_people,
        "active_enrollments": plan.people,
        "changes": [asdict(c) for c in plan.changes],
        "effects": [asdict(e) for e in plan.effects],
        "forecast_days": HORIZON.days,
        "forecast": {
            seq: {step: {"before": b, "after": a} for step, (b, a) in steps.items()}
            for seq, steps in plan.forecast.items()
        },  # fmt: skip
        "experiments": [
            {
                "name": e.name,
                "kind": e.kind,
                "shares": dict(e.arms),
                "kept": e.ended.kept if e.ended else None,
                "ended_at": e.ended.at.isoformat() if e.ended else None,
            }
            for e in plan.experiments
        ],  # fmt: skip
    }


def plan_text(plan: Plan) -> str:
    if plan.baseline is None:
        return ("Nothing recorded yet: send-due, the worker or serve records the sequences "
                "the first time they run with this database. The workspace is new: "
                + ", ".join(c.sequence for c in plan.changes) + ".")  # fmt: skip
    lines = [f"Compared with {plan.baseline}."]
    lines += ["", "Changes:"] + (
        [f"  {c.sequence}{f' / {c.step}' if c.step else ''}: {c.text}" for c in plan.changes]
        or ["  none"]
    )
    if plan.experiments:
        lines += ["", "Experiments:"] + [f"  {e.line()}" for e in plan.experiments]
    lines += ["", f"People in these sequences now (active enrolments): {plan.people}", "Effects:"]
    lines += [f"  {e.sequence} / {e.step}: {e.text}" for e in plan.effects] or [
        "  no one is affected"
    ]
    lines += ["", f"Emails in the next {HORIZON.days} days, per step (before → after):"]
    for seq, steps in plan.forecast.items():
        lines.append(f"  {seq}")
        width = max(len(s) for s in steps)
        for step, (before, after) in steps.items():
            mark = "" if before == after else "   *"
            lines.append(f"    {step:<{width}}  {before:>5} → {after:<5}{mark}".rstrip())
    if plan.moves_people:
        lines += ["", "This change ends or moves people: review it before it goes live (exit 2)."]
    return "\n".join(lines)
