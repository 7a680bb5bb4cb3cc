"""Experiments as files declare them, and who gets which variant.

A step (or a newsletter issue) may list `variants:`, each a name, a subject, preheader
and/or template of its own, and a weight; a sequence may hold out a `holdout:` share
of its subscribers, who get none of its emails, so that its effect can be measured;
`goal:` names the event that counts as a conversion.

Experiment names:
- a step's variants: `<sequence>.<step id>` (e.g. `from-curious-to-customer.welcome`);
- a sequence's holdout: the sequence's own name;
- a newsletter issue's variants: `broadcast-<id>` (its id in `nurture broadcast list`).

Assignment is a hash of (the subscriber's address, the experiment's name): the same
person always gets the same variant, on any host, in `simulate` and `plan` as in
`send-due`, and nothing needs to be stored before the decision is made.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Sequence as Seq
from datetime import timedelta
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
)

from nurture.content.durations import format_duration, parse_duration
from nurture.content.yamlmarks import Path_, line_for
from nurture.errors import SequenceError

#: The variant name recorded on a held-out subscriber's (skipped) deliveries.
HOLDOUT = "holdout"
#: What a held-out subscriber's skipped step says.
HOLDOUT_REASON = "holdout: this subscriber gets none of the sequence's emails"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: Events the tracking endpoints write: counted as opens and clicks, never as a goal.
_TRACKED = ("open", "click", "unsubscribe", "bounced", "complained")
_EVENT = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
#: How a broadcast's test share picks its winner.
PICK_BY = ("opens", "clicks", "conversions")
#: A test share's winner is picked this long after the issue starts, by clicks, unless
#: `--pick-after` / `--by` (or `pick_after:` / `pick_by:`) say otherwise.
DEFAULT_PICK_AFTER = timedelta(hours=4)
DEFAULT_PICK_BY = "clicks"


def parse_share(value: Any) -> float:
    """'10%' -> 0.1; ValueError saying how to write it for anything else."""
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if not match:
        raise ValueError(f"{value!r} is not a percentage: write it like 10%")
    share = float(match.group(1)) / 100
    if not 0 < share < 1:
        raise ValueError(f"{value!r} must be more than 0% and less than 100%")
    return share


def percent(share: float) -> str:
    """0.1 -> '10%', 0.125 -> '12.5%'."""
    return f"{share * 100:.1f}".removesuffix(".0") + "%"


#: The largest relative weight: beyond it a weight is a typo, and a float cannot hold
#: every integer YAML can write (400 digits overflow) nor order `.nan` or `.inf`.
MAX_WEIGHT = 1_000_000


def _weight(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        return parse_share(value) * 100
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a positive number (or a percentage, like 50%)")
    if (isinstance(value, float) and not math.isfinite(value)) or value > MAX_WEIGHT:
        raise ValueError(f"must be a positive number up to {MAX_WEIGHT}")
    if value <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return float(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One arm of an experiment: what it sends instead of the step (or issue) as written."""

    name: str
    subject: str | None = Field(default=None, min_length=1)
    preheader: str | None = None
    template: str | None = Field(default=None, min_length=1)
    #: Relative to the other variants' weights (percentages are weights that add to 100).
    weight: Annotated[float, BeforeValidator(_weight)] = 1.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a variant name: use letters, digits, '-' and '_'")
        if v.lower() == HOLDOUT:
            raise ValueError(f"'{HOLDOUT}' is kept for the subscribers a sequence holds out")
        return v


class Goal(_Strict):
    """The event that counts as a conversion, within an optional time after the email."""

    event: str
    within: timedelta | None = None

    @field_validator("event")
    @classmethod
    def _event(cls, v: str) -> str:
        if v in _TRACKED:
            raise ValueError(f"'{v}' is counted already: a goal is an event of your own, "
                             "like purchased or demo_booked")  # fmt: skip
        if not _EVENT.match(v):
            raise ValueError(f"{v!r} is not an event name (lower case, no spaces)")
        return v

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        return None if v is None or isinstance(v, timedelta) else parse_duration(v)

    @field_serializer("within")
    def _as_written(self, v: timedelta | None) -> str | None:
        return format_duration(v) if v is not None else None

    def describe(self) -> str:
        within = f" within {format_duration(self.within)} of the email" if self.within else ""
        return f"event {self.event}{within}"


class IssueVariant(Variant):
    """A newsletter issue's variant as scheduled: its own body, when its `template`
    names another issue or template, is kept with it."""

    body_html: str | None = None
    body_text: str | None = None


class IssueExperiment(_Strict):
    """What a broadcast keeps of its experiment (`broadcasts.experiment`, as JSON)."""

    variants: tuple[IssueVariant, ...]
    #: The share that gets the variants first; None: everyone gets them.
    test_share: float | None = None
    pick_by: str = DEFAULT_PICK_BY
    pick_after: timedelta = DEFAULT_PICK_AFTER
    goal: Goal | None = None

    @field_serializer("pick_after")
    def _after_as_written(self, v: timedelta) -> str:
        return format_duration(v)

    @field_validator("pick_after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> Any:
        return v if isinstance(v, timedelta) else parse_duration(v)


Share = Annotated[float, BeforeValidator(parse_share)]


class Arm(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...


def position(email: str, experiment: str, salt: str = "") -> float:
    """Where an address falls in [0, 1) for an experiment: the first 8 bytes of
    sha256(experiment, salt, address). Addresses are compared in lower case."""
    key = f"{experiment}\0{salt}\0{email.strip().lower()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def pick(arms: Seq[Arm], email: str, experiment: str) -> str:
    """The variant this address gets, in proportion to the weights."""
    total = sum(a.weight for a in arms)
    at = position(email, experiment) * total
    for arm in arms:
        if at < arm.weight:
            return arm.name
        at -= arm.weight
    return arms[-1].name


def held_out(email: str, sequence: str, share: float) -> bool:
    return position(email, sequence, HOLDOUT) < share


def in_test_share(email: str, experiment: str, share: float) -> bool:
    """Whether a newsletter reader is in the test share that gets the variants first."""
    return position(email, experiment, "test-share") < share


def step_experiment(sequence: str, step_id: str) -> str:
    return f"{sequence}.{step_id}"


S = TypeVar("S", bound=BaseModel)


def apply_variant(step: S, name: str | None) -> S:
    """The step (or issue) as variant `name` sends it; as written when it has no such
    variant (one removed from the file since it was assigned)."""
    found = next((v for v in getattr(step, "variants", ()) if v.name == name), None)
    if found is None:
        return step
    changes = {k: getattr(found, k) for k in ("subject", "preheader", "template")
               if getattr(found, k) is not None}  # fmt: skip
    return step.model_copy(update=changes)


def check_variants(
    variants: Any, lines: dict[Path_, int], shown: str, at: tuple[Any, ...], label: str = ""
) -> list[SequenceError]:
    """Problems across one list of variants as written (count, names written twice,
    percentages that do not add up); each variant's own fields are checked by `Variant`."""
    if variants is None:
        return []

    def problem(where: tuple[Any, ...], message: str, warning: bool = False) -> SequenceError:
        return SequenceError(shown, line_for(lines, (*at, *where)), label + message,
                             warning=warning)  # fmt: skip

    if not isinstance(variants, list):
        return [problem((), "variants: write a list of variants, each with a name")]
    items = [(j, v) for j, v in enumerate(variants) if isinstance(v, dict)]
    problems = []
    if len(variants) < 2:
        problems.append(problem((), "variants: an experiment needs at least two variants"))
    seen: dict[str, int] = {}
    for j, v in items:
        name = v.get("name")
        if isinstance(name, str) and name in seen:
            problems.append(problem((j, "name"), f"variant name '{name}' is written twice"))
        elif isinstance(name, str):
            seen[name] = j
    weights = [v.get("weight") for _, v in items if "weight" in v]
    percents = [w for w in weights if isinstance(w, str) and w.strip().endswith("%")]
    if percents and len(percents) != len(items):
        problems.append(problem((), "variants: give every variant's weight as a percentage, "
                                "or none (weights are then relative, 1 by default)"))  # fmt: skip
    elif percents:
        total = sum(_percent_or_zero(w) for w in percents)
        if abs(total - 100) > 1e-6:
            problems.append(problem((), f"variants: the percentages add up to "
                                    f"{total:g}%, not 100%"))  # fmt: skip
    same = _alike(items)
    if same:
        first, j, second = same
        problems.append(problem((j, "name"), f"variants '{first}' and '{second}' send the "
                                "same email", warning=True))  # fmt: skip
    return problems


def _percent_or_zero(value: str) -> float:
    try:
        return parse_share(value) * 100
    except ValueError:
        return 0.0  # reported by the variant's own check


def _alike(items: list[tuple[int, dict[str, Any]]]) -> tuple[str, int, str] | None:
    """(a name, the list index of a later variant, its name) of two variants that send
    the same email, or None."""
    seen: dict[tuple[Any, ...], str] = {}
    for j, v in items:
        key = (v.get("subject"), v.get("preheader"), v.get("template"))
        if key in seen:
            return seen[key], j, str(v.get("name"))
        seen[key] = str(v.get("name"))
    return None


def variant_problem(owner: str, name: str, names: Seq[str]) -> str | None:
    """Why `name` is not one of the variants `names` of `owner`, or None when it is."""
    if name in names:
        return None
    listed = f"variants: {', '.join(names)}" if names else "it has no variants"
    return f"{owner} has no variant {name!r}{did_you_mean(name, names)} ({listed})"


def did_you_mean(name: str, known: Seq[str]) -> str:
    """' (did you mean 'x'?)' or ''."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""
