"""Sequence files: YAML validated into frozen objects that remember file and line.

Edits to a file keep subscribers in place because enrolments point at step *ids*,
never at positions.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
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
)

from nurture.content.durations import parse_duration
from nurture.content.experiments import Goal, Share, Variant
from nurture.content.stepchecks import check_steps
from nurture.content.yamlmarks import DuplicateKey, explain, line_for, load_with_lines
from nurture.errors import SequenceError
from nurture.logsafe import bug_summary, frames
from nurture.sender import sender_problem


class Stage(StrEnum):
    EDUCATION = "education"
    SALES = "sales"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
log = logging.getLogger(__name__)
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TRIGGER = re.compile(r"^(signup|manual|tag:[\w.-]+|completed:[\w.-]+)$")


def _trigger_hint(value: str) -> str:
    """' (did you mean …?)' for a misspelt trigger kind, keeping what follows a ':'."""
    kind, colon, rest = value.partition(":")
    kinds = ["tag", "completed"] if colon else ["signup", "manual"]
    close = difflib.get_close_matches(kind.strip().lower(), kinds, n=1, cutoff=0.5)
    if not close or (colon and not rest.strip()):
        return ""
    return f" (did you mean '{close[0]}{colon}{rest.strip()}'?)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class SendWindow(_Strict):
    """When emails may arrive, in the subscriber's own time zone."""

    days: tuple[Day, ...] = _DAYS
    hours: str = "00:00-24:00"

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        match = _HOURS.match(v.replace(" ", ""))
        if not match:
            raise ValueError(f"{v!r} does not look like 09:00-17:00")
        start, end = v.replace(" ", "").split("-")
        if start >= end:
            raise ValueError("the window must end after it starts (09:00-17:00)")
        return v.replace(" ", "")

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(_DAYS.index(d) for d in self.days)

    @property
    def start_minute(self) -> int:
        h, m = self.hours.split("-")[0].split(":")
        return int(h) * 60 + int(m)

    @property
    def end_minute(self) -> int:
        h, m = self.hours.split("-")[1].split(":")
        return int(h) * 60 + int(m)


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value or ())


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


class ExitWhen(_Strict):
    """The goal: any listed event or tag ends the enrolment at once."""

    event: Names = ()
    tag: Names = ()


class Readiness(_Strict):
    """Engagement points that make a subscriber sales-ready once they reach `ready_at`."""

    points: dict[str, int] = Field(default_factory=dict)
    ready_at: int = Field(ge=1)

    @field_validator("points")
    @classmethod
    def _kinds(cls, v: dict[str, int]) -> dict[str, int]:
        for key in v:
            if key not in ("open", "click") and not re.match(r"^event:[\w.-]+$", key):
                raise ValueError(f"unknown kind {key!r}: use open, click or event:<name>")
        return v


class Condition(_Strict):
    """All keys must hold for a gated step to be sent."""

    ready: bool | None = None
    tag: str | None = None
    not_tag: str | None = None
    event: str | None = None
    clicked: str | None = None
    opened: str | None = None
    score_at_least: int | None = None


class Step(_Strict):
    id: str
    after: Duration = timedelta(0)
    stage: Stage = Stage.EDUCATION
    subject: str = Field(min_length=1)
    #: The line inboxes show after the subject (a Jinja string, like the subject).
    preheader: str | None = None
    template: str = Field(min_length=1)
    when: Condition | None = None
    wait_up_to: Duration | None = None
    otherwise: str | None = None
    #: An experiment (`content/experiments.py`): each subscriber gets one of these.
    variants: tuple[Variant, ...] = ()
    line: int = Field(default=0, exclude=True)

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r} is not a step id: use lower-case letters, digits, '-' and '_'")
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
    send_window: SendWindow | None = None
    exit_when: ExitWhen | None = None
    readiness: Readiness | None = None
    reentry: bool = False
    #: The topic its emails belong to (nurture.content.topics); None: its own name.
    topic: str | None = None
    #: The share of subscribers who get none of its emails, to measure its lift.
    holdout: Share | None = None
    #: The event counted as a conversion by `stats --experiment`.
    goal: Goal | None = None
    steps: tuple[Step, ...] = Field(min_length=1)
    path: str = Field(default="", exclude=True)
    #: (top-level key, line) as written, for problems found after loading.
    marks: tuple[tuple[str, int], ...] = Field(default=(), exclude=True)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        problem = sender_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: str) -> str:
        if not _TRIGGER.match(v):
            raise ValueError(f"unknown trigger {v!r}{_trigger_hint(v)}: use signup, manual, "
                             "tag:<name> or completed:<sequence>")  # fmt: skip
        return v

    def line_of(self, key: str) -> int:
        """The line of a top-level key, or 1 when it was not written."""
        return dict(self.marks).get(key, 1)

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def after(self, step_id: str) -> Step | None:
        """The step following `step_id`, or None at the end."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id) if step_id in ids else len(ids)
        return self.steps[i + 1] if i + 1 < len(self.steps) else None


_KNOWN_KEYS: dict[str, list[str]] = {
    "sequence": ["name", "trigger", "from", "description", "send_window", "exit_when",
                 "readiness", "reentry", "topic", "holdout", "goal", "steps"],
    "steps": ["id", "after", "stage", "subject", "preheader", "template", "when", "wait_up_to",
              "otherwise", "variants"],
    "variants": list(Variant.model_fields),
    "goal": list(Goal.model_fields),
    "when": list(Condition.model_fields),
    "send_window": ["days", "hours"],
    "exit_when": ["event", "tag"],
    "readiness": ["points", "ready_at"],
}  # fmt: skip


@dataclass(frozen=True)
class Catalog:
    """Every sequence of a workspace by name, plus the problems found loading them."""

    sequences: dict[str, Sequence] = field(default_factory=dict)
    problems: tuple[SequenceError, ...] = ()

    def get(self, name: str) -> Sequence | None:
        return self.sequences.get(name)

    def triggered_by(self, trigger: str) -> list[Sequence]:
        return [s for s in self.sequences.values() if s.trigger == trigger]


def explain_error(err: Mapping[str, Any]) -> str:
    """One sentence for a pydantic error, naming the field once."""
    loc = err["loc"]
    key = str(loc[-1]) if loc else ""
    field = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if err["type"] == "extra_forbidden":
        parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "sequence")
        close = difflib.get_close_matches(key, _KNOWN_KEYS.get(parent, []), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    if err["type"] == "too_short" and field == "steps":
        return "steps: a sequence needs at least one step"
    if err["type"] == "string_too_short":
        return f"{field}: must not be empty"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be "):  # pydantic's own: say what was written
        wanted = msg.removeprefix("Input should be ").split(", unable to")[0]
        given = err.get("input")
        shown = f"{given!r} " if isinstance(given, str | int | float | None) else ""
        msg = f"{shown}should be {wanted}"
    return f"{field}: {msg}" if field else msg


#: Keys the loader sets itself; written in a file they are unknown keys.
_INTERNAL = {"sequence": ("path", "marks"), "steps": ("line",)}


def _internal_keys(data: dict[Any, Any], lines: dict[Any, int], shown: str) -> list[SequenceError]:
    found: list[tuple[Any, ...]] = [(key,) for key in _INTERNAL["sequence"] if key in data]
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        found += [("steps", i, key) for key in _INTERNAL["steps"] if isinstance(step, dict)
                  and key in step]  # fmt: skip
    return [SequenceError(shown, lines.get(loc), explain_error({"type": "extra_forbidden", "loc": loc}))
            for loc in found]  # fmt: skip


def load_sequence(
    path: Path, root: Path | None = None
) -> tuple[Sequence | None, list[SequenceError]]:
    """Parse one file; on any problem return (None, problems), all of them at once, each
    at the line of the field at fault."""
    shown = str(path.relative_to(root)) if root else str(path)
    try:
        data, lines = load_with_lines(path.read_text(encoding="utf-8"))
    except DuplicateKey as e:
        return None, [SequenceError(shown, e.line, f"key '{e.key}' is written twice")]
    except yaml.YAMLError as e:
        line, problem = explain(e)
        return None, [SequenceError(shown, line, f"YAML: {problem}")]
    except (OSError, UnicodeDecodeError) as e:
        return None, [SequenceError(shown, None, f"cannot read: {e}")]
    if not isinstance(data, dict):
        return None, [SequenceError(shown, 1, "a sequence file must be a mapping of keys")]
    problems = _internal_keys(data, lines, shown) + check_steps(data, lines, shown)
    data.setdefault("name", path.stem)
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            step["line"] = lines.get(("steps", i), 0)
    marks = tuple((k, lines[(k,)]) for k in data if isinstance(k, str) and (k,) in lines)
    try:
        seq = Sequence.model_validate({**data, "path": shown, "marks": marks})
    except ValidationError as e:
        errors = e.errors()
        for err in errors:
            loc = err["loc"]
            if err["type"] == "too_short" and any(
                o["loc"][: len(loc)] == loc and o is not err for o in errors
            ):
                continue  # only a consequence of an invalid item, already reported
            problems.append(SequenceError(shown, line_for(lines, loc), explain_error(err)))
    else:
        if not problems:
            return seq, []
    return None, sorted(problems, key=lambda p: p.line or 0)


def load_catalog(sequences_dir: Path) -> Catalog:
    sequences: dict[str, Sequence] = {}
    problems: list[SequenceError] = []
    root = sequences_dir.parent
    for path in sorted(sequences_dir.glob("*.y*ml")):
        try:
            seq, errs = load_sequence(path, root)
        except Exception as e:  # noqa: BLE001 - one file's surprise must not stop every page
            log.error("%s could not be loaded: %s\n%s", path.name, bug_summary(e), frames(e))
            seq, errs = None, [SequenceError(str(path.relative_to(root)), None, "cannot be loaded "
                                             f"({bug_summary(e)}); it is left out")]  # fmt: skip
        problems.extend(errs)
        if seq is None:
            continue
        if seq.name in sequences:
            other = sequences[seq.name].path
            problems.append(SequenceError(seq.path, seq.line_of("name"),
                                          f"name '{seq.name}' is already used by {other}"))  # fmt: skip
            continue
        sequences[seq.name] = seq
    for seq in sequences.values():
        if seq.trigger.startswith("completed:"):
            other = seq.trigger.split(":", 1)[1]
            if other not in sequences or other == seq.name:
                problems.append(SequenceError(seq.path, seq.line_of("trigger"),
                                              f"trigger names sequence '{other}', "
                                "which does not exist (or is this one)"))  # fmt: skip
    return Catalog(sequences, tuple(problems))


_cache: dict[Path, tuple[tuple[tuple[str, float], ...], Catalog]] = {}


def catalog_for(sequences_dir: Path, *, quiet: bool = False) -> Catalog:
    """The workspace's catalog, reloaded only when a file changed (cheap enough per send).
    Its problems are logged for the commands that go on without the broken files;
    `validate` (quiet) prints them itself, once each."""
    stamp = (
        tuple((p.name, p.stat().st_mtime) for p in sorted(sequences_dir.glob("*.y*ml")))
        if sequences_dir.is_dir()
        else ()
    )
    cached = _cache.get(sequences_dir)
    if cached and cached[0] == stamp:
        return cached[1]
    catalog = load_catalog(sequences_dir) if sequences_dir.is_dir() else Catalog()
    for problem in (
        () if quiet else catalog.problems
    ):  # once per change: the rest of the workspace still runs
        log.warning("%s (a file with errors is left out; see `nurture validate`)", problem)
    _cache[sequences_dir] = (stamp, catalog)
    return catalog
