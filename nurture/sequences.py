"""Sequence files: YAML validated into frozen objects that remember file and line.

Edits to a file keep subscribers in place because enrolments point at step *ids*,
never at positions.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nurture.durations import parse_duration
from nurture.errors import SequenceError
from nurture.yamlmarks import DuplicateKey, line_for, load_with_lines


class Stage(StrEnum):
    EDUCATION = "education"
    SALES = "sales"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TRIGGER = re.compile(r"^(signup|manual|tag:[\w.-]+|completed:[\w.-]+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Step(_Strict):
    id: str
    after: Duration = timedelta(0)
    stage: Stage = Stage.EDUCATION
    subject: str = Field(min_length=1)
    template: str = Field(min_length=1)
    line: int = Field(default=0, exclude=True)

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("step ids use lower-case letters, digits, '-' and '_'")
        return v

    @field_validator("after")
    @classmethod
    def _not_negative(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise ValueError("a delay cannot be negative")
        return v


class Sequence(_Strict):
    name: str
    trigger: str = "signup"
    sender: str | None = Field(default=None, alias="from")
    description: str | None = None
    steps: tuple[Step, ...] = Field(min_length=1)
    path: str = Field(default="", exclude=True)

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: str) -> str:
        if not _TRIGGER.match(v):
            raise ValueError("trigger must be signup, manual, tag:<name> or completed:<sequence>")
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> Sequence:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"duplicate step id {step.id!r}")
            seen.add(step.id)
        return self

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def after(self, step_id: str) -> Step | None:
        """The step following `step_id`, or None at the end."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id) if step_id in ids else len(ids)
        return self.steps[i + 1] if i + 1 < len(self.steps) else None


_KNOWN_KEYS: dict[type[BaseModel], list[str]] = {
    Sequence: ["name", "trigger", "from", "description", "steps"],
    Step: ["id", "after", "stage", "subject", "template"],
}
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Catalog:
    """Every sequence of a workspace by name, plus the problems found loading them."""

    sequences: dict[str, Sequence] = field(default_factory=dict)
    problems: tuple[SequenceError, ...] = ()

    def get(self, name: str) -> Sequence | None:
        return self.sequences.get(name)

    def triggered_by(self, trigger: str) -> list[Sequence]:
        return [s for s in self.sequences.values() if s.trigger == trigger]


def _explain(err: dict[str, Any]) -> str:
    loc = err["loc"]
    key = str(loc[-1]) if loc else ""
    if err["type"] == "extra_forbidden":
        model = Step if "steps" in loc else Sequence
        close = difflib.get_close_matches(key, _KNOWN_KEYS[model], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}" if isinstance(loc[-1], str) else msg


def _duplicate_ids(steps: Any, lines: dict[Any, int], shown: str) -> list[SequenceError]:
    seen: set[str] = set()
    problems = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        sid = step.get("id") if isinstance(step, dict) else None
        if isinstance(sid, str) and sid in seen:
            line = lines.get(("steps", i, "id"))
            problems.append(SequenceError(shown, line, f"duplicate step id '{sid}'"))
        seen.add(sid)  # type: ignore[arg-type]
    return problems


def load_sequence(
    path: Path, root: Path | None = None
) -> tuple[Sequence | None, list[SequenceError]]:
    """Parse one file; on any problem return (None, problems), all of them at once."""
    shown = str(path.relative_to(root)) if root else str(path)
    try:
        data, lines = load_with_lines(path.read_text(encoding="utf-8"))
    except DuplicateKey as e:
        return None, [SequenceError(shown, e.line, f"key '{e.key}' is written twice")]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        return None, [SequenceError(shown, mark.line + 1 if mark else None, f"YAML: {problem}")]
    except (OSError, UnicodeDecodeError) as e:
        return None, [SequenceError(shown, None, f"cannot read: {e}")]
    if not isinstance(data, dict):
        return None, [SequenceError(shown, 1, "a sequence file must be a mapping of keys")]
    data.setdefault("name", path.stem)
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            step["line"] = lines.get(("steps", i), 0)
    problems = _duplicate_ids(steps, lines, shown)
    try:
        seq = Sequence.model_validate({**data, "path": shown})
    except ValidationError as e:
        errors = e.errors()
        for err in errors:
            loc = err["loc"]
            if err["type"] == "too_short" and any(
                o["loc"][: len(loc)] == loc and o is not err for o in errors
            ):
                continue  # only a consequence of an invalid item, already reported
            if err["msg"].startswith("Value error, duplicate step id"):
                continue  # reported with its line by _duplicate_ids
            problems.append(SequenceError(shown, line_for(lines, loc), _explain(err)))
    else:
        if not problems:
            return seq, []
    return None, sorted(problems, key=lambda p: p.line or 0)


def load_catalog(sequences_dir: Path) -> Catalog:
    sequences: dict[str, Sequence] = {}
    problems: list[SequenceError] = []
    root = sequences_dir.parent
    for path in sorted(sequences_dir.glob("*.y*ml")):
        seq, errs = load_sequence(path, root)
        problems.extend(errs)
        if seq is None:
            continue
        if seq.name in sequences:
            other = sequences[seq.name].path
            problems.append(
                SequenceError(seq.path, 1, f"name '{seq.name}' is already used by {other}")
            )
            continue
        sequences[seq.name] = seq
    return Catalog(sequences, tuple(problems))


_cache: dict[Path, tuple[tuple[tuple[str, float], ...], Catalog]] = {}


def catalog_for(sequences_dir: Path) -> Catalog:
    """The workspace's catalog, reloaded only when a file changed (cheap enough per send)."""
    stamp = (
        tuple((p.name, p.stat().st_mtime) for p in sorted(sequences_dir.glob("*.y*ml")))
        if sequences_dir.is_dir()
        else ()
    )
    cached = _cache.get(sequences_dir)
    if cached and cached[0] == stamp:
        return cached[1]
    catalog = load_catalog(sequences_dir) if sequences_dir.is_dir() else Catalog()
    _cache[sequences_dir] = (stamp, catalog)
    return catalog
