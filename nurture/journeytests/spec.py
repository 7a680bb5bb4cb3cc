"""The journey test file format: `sequences/tests/*.yaml`, read with line marks.

A file tests one sequence. Each persona signs up (when, in which zone, with which tags
and fields), does things at offsets from signup (the `--events` syntax of `simulate`),
and expects steps on given local days, steps never, an end, readiness and a handoff.
Invariants hold for every persona of the file. Every problem of a file is reported at
once, as `path:line: message`, so it reads like `validate`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from nurture.content.durations import parse_duration
from nurture.content.sequences import Catalog
from nurture.content.yamlmarks import DuplicateKey, Path_, line_for, load_with_lines
from nurture.errors import SequenceError
from nurture.simulate import PlannedEvent, parse_event

#: When a persona signs up unless it says: a Monday morning, so runs never depend on today.
DEFAULT_SIGNUP = datetime(2026, 1, 5, 9, 0)
#: How long each persona is followed unless the file says.
DEFAULT_DAYS = 60
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DAY = re.compile(r"^day\s+(\d+)$")
_FILE_KEYS = ("sequence", "days", "invariants", "personas")
_PERSONA_KEYS = ("name", "signup", "timezone", "first_name", "email", "tags", "attributes",
                 "events", "expect")  # fmt: skip
_EXPECT_KEYS = ("receives", "never", "ends", "ready", "handoff", "score")
_INVARIANT_KEYS = ("max_per_local_day", "ends_within", "no_sales_after")
_END_STATUSES = ("completed", "exited", "active")


@dataclass(frozen=True)
class Day:
    """An expected local day: `day N` after signup, a date, or never (None both)."""

    number: int | None = None
    on: date | None = None
    line: int = 0

    @property
    def never(self) -> bool:
        return self.number is None and self.on is None


@dataclass(frozen=True)
class Expect:
    receives: dict[str, Day] = field(default_factory=dict)
    never: dict[str, int] = field(default_factory=dict)  # step id -> line
    ends: Day | None = None
    ends_status: tuple[str, int] | None = None
    ready: Day | None = None
    handoff: Day | None = None
    score: tuple[int, int] | None = None  # (score, line)


@dataclass(frozen=True)
class Persona:
    name: str
    line: int
    signup: datetime  # aware, in the persona's zone
    zone: ZoneInfo
    first_name: str | None
    email: str
    tags: tuple[str, ...]
    attributes: dict[str, Any]
    events: list[PlannedEvent]
    expect: Expect


@dataclass(frozen=True)
class Invariants:
    max_per_local_day: tuple[int, int] | None = None  # (count, line)
    ends_within: tuple[timedelta, int] | None = None
    no_sales_after: tuple[tuple[str, int], ...] = ()  # (kind:name, line)


@dataclass(frozen=True)
class TestFile:
    path: str
    sequence: str
    days: int
    invariants: Invariants
    personas: tuple[Persona, ...]


class _Reader:
    """Reads one file's data, collecting problems instead of stopping at the first."""

    def __init__(self, shown: str, lines: dict[Path_, int], catalog: Catalog, zone: str):
        self.shown, self.lines, self.catalog, self.zone = shown, lines, catalog, zone
        self.problems: list[SequenceError] = []
        self.steps: list[str] = []

    def problem(self, where: Path_, message: str) -> None:
        self.problems.append(SequenceError(self.shown, line_for(self.lines, where), message))

    def line(self, where: Path_) -> int:
        return line_for(self.lines, where) or 0

    def keys(self, data: Any, where: Path_, known: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.problem(where, f"{what} must be a mapping of keys")
            return {}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem((*where, key), f"unknown key '{key}'{hint}")
        return data

    def step(self, step_id: Any, where: Path_) -> str | None:
        if not isinstance(step_id, str) or step_id not in self.steps:
            close = difflib.get_close_matches(str(step_id), self.steps, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.problem(where, f"the sequence has no step '{step_id}'{hint}")
            return None
        return step_id

    def day(self, value: Any, where: Path_) -> Day | None:
        line = self.line(where)
        if value is False or value == "never":
            return Day(line=line)
        if isinstance(value, bool):
            self.problem(where, f"{value!r} is not a day: write `day 3`, a date or never")
            return None
        if isinstance(value, int) and value >= 0:
            return Day(number=value, line=line)
        if isinstance(value, date) and not isinstance(value, datetime):
            return Day(on=value, line=line)
        match = _DAY.match(str(value).strip())
        if match:
            return Day(number=int(match.group(1)), line=line)
        self.problem(where, f"{value!r} is not a day: write `day 3`, a date (2026-01-07) or never")
        return None


def load_test_file(path: Path, root: Path, catalog: Catalog, zone: str) -> tuple[
    TestFile | None, list[SequenceError]
]:  # fmt: skip
    """One test file, or None and every problem found in it."""
    shown = str(path.relative_to(root))
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
    reader = _Reader(shown, lines, catalog, zone)
    top = reader.keys(data, (), _FILE_KEYS, "a test file")
    name = top.get("sequence")
    seq = catalog.get(name) if isinstance(name, str) else None
    if seq is None and top:
        known = ", ".join(sorted(catalog.sequences)) or "none"
        reader.problem(("sequence",), f"sequence: no sequence named {name!r} (known: {known})")
        return None, reader.problems
    if seq is None:
        return None, reader.problems
    reader.steps = [s.id for s in seq.steps]
    days = top.get("days", DEFAULT_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        reader.problem(("days",), f"days: {days!r} is not a number of days from 1 to 3650")
        days = DEFAULT_DAYS
    invariants = _invariants(reader, top.get("invariants", {}))
    personas = _personas(reader, top.get("personas"))
    if reader.problems:
        return None, reader.problems
    return TestFile(shown, seq.name, days, invariants, tuple(personas)), []


def _invariants(reader: _Reader, data: Any) -> Invariants:
    where: Path_ = ("invariants",)
    found = reader.keys(data, where, _INVARIANT_KEYS, "invariants")
    per_day = ends = None
    most = found.get("max_per_local_day")
    if most is not None:
        if isinstance(most, int) and not isinstance(most, bool) and most >= 1:
            per_day = (most, reader.line((*where, "max_per_local_day")))
        else:
            reader.problem((*where, "max_per_local_day"), "max_per_local_day: a number, 1 or more")
    within = found.get("ends_within")
    if within is not None:
        try:
            ends = (parse_duration(within), reader.line((*where, "ends_within")))
        except ValueError as e:
            reader.problem((*where, "ends_within"), f"ends_within: {e}")
    after: list[tuple[str, int]] = []
    items = found.get("no_sales_after", [])
    for i, item in enumerate(items if isinstance(items, list) else [items]):
        at = (
            (*where, "no_sales_after", i) if isinstance(items, list) else (*where, "no_sales_after")
        )
        if isinstance(item, str) and re.match(r"^(click|open|event|tag):[\w.:-]+$", item):
            after.append((item, reader.line(at)))
        else:
            reader.problem(
                at, f"no_sales_after: {item!r} is not KIND:NAME (like event:demo_booked)"
            )
    return Invariants(per_day, ends, tuple(after))


def _personas(reader: _Reader, data: Any) -> list[Persona]:
    if not isinstance(data, list) or not data:
        reader.problem(("personas",), "personas: list at least one persona")
        return []
    personas = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        persona = _persona(reader, item, ("personas", i))
        if persona is None:
            continue
        if persona.name in seen:
            reader.problem(("personas", i, "name"), f"persona '{persona.name}' is named twice")
        seen.add(persona.name)
        personas.append(persona)
    return personas


def _persona(reader: _Reader, data: Any, where: Path_) -> Persona | None:
    found = reader.keys(data, where, _PERSONA_KEYS, "a persona")
    if not found:
        return None
    before = len(reader.problems)
    name = found.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        reader.problem((*where, "name"), f"name: {name!r} is not a name: use lower-case "
                       "letters, digits, '-' and '_' (it names the snapshot folder)")  # fmt: skip
        name = ""
    zone_name = found.get("timezone", reader.zone)
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        reader.problem((*where, "timezone"), f"timezone: {zone_name!r} is not an IANA time "
                       "zone (like Europe/London)")  # fmt: skip
        zone = ZoneInfo("UTC")
    signup = _signup(reader, found.get("signup", DEFAULT_SIGNUP), (*where, "signup"), zone)
    tags = found.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        reader.problem((*where, "tags"), "tags: a list of tag names")
        tags = []
    attributes = found.get("attributes", {})
    if not isinstance(attributes, dict):
        reader.problem((*where, "attributes"), "attributes: a mapping of field names to values")
        attributes = {}
    events = _events(reader, found.get("events", []), (*where, "events"))
    expect = _expect(reader, found.get("expect", {}), (*where, "expect"))
    if len(reader.problems) > before:
        return None
    first_name = found.get("first_name", "Sam")
    email = str(found.get("email", f"{name}@example.com"))
    return Persona(name, reader.line(where), signup, zone,
                   None if first_name is None else str(first_name), email, tuple(tags),
                   dict(attributes), events, expect)  # fmt: skip


def _signup(reader: _Reader, value: Any, where: Path_, zone: ZoneInfo) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            reader.problem(where, f"signup: {value!r} is not a local time like 2026-01-05 09:00")
            return DEFAULT_SIGNUP.replace(tzinfo=zone)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, 9, 0)
    if not isinstance(value, datetime):
        reader.problem(where, f"signup: {value!r} is not a local time like 2026-01-05 09:00")
        return DEFAULT_SIGNUP.replace(tzinfo=zone)
    # YAML reads a bare timestamp as UTC; what is written is the persona's local time
    return value.replace(tzinfo=zone)


def _events(reader: _Reader, value: Any, where: Path_) -> list[PlannedEvent]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        reader.problem(where, "events: a list like [click:welcome@1d, event:demo_booked@10d]")
        return []
    planned = []
    for i, item in enumerate(items):
        at = (*where, i) if isinstance(value, list) else where
        try:
            event = parse_event(str(item))
        except ValueError as e:
            reader.problem(at, f"events: {e}")
            continue
        if event.kind in ("click", "open"):
            reader.step(event.name, at)
        planned.append(event)
    return sorted(planned, key=lambda e: e.offset)


def _expect(reader: _Reader, data: Any, where: Path_) -> Expect:
    found = reader.keys(data, where, _EXPECT_KEYS, "expect")
    receives: dict[str, Day] = {}
    got = found.get("receives", {})
    if isinstance(got, list):
        got = {item: "any" for item in got}
    if not isinstance(got, dict):
        reader.problem((*where, "receives"), "receives: step ids, each with its day (day 3)")
        got = {}
    for step_id, day in got.items():
        at = (*where, "receives", step_id)
        if reader.step(step_id, at) is None:
            continue
        if day == "any":
            receives[step_id] = Day(number=-1, line=reader.line(at))
            continue
        parsed = reader.day(day, at)
        if parsed is not None and parsed.never:
            reader.problem(at, f"receives: use `never: [{step_id}]` for a step that never arrives")
        elif parsed is not None:
            receives[step_id] = parsed
    never: dict[str, int] = {}
    items = found.get("never", [])
    for i, step_id in enumerate(items if isinstance(items, list) else [items]):
        at = (*where, "never", i) if isinstance(items, list) else (*where, "never")
        if reader.step(step_id, at) is not None:
            never[step_id] = reader.line(at)
    ends, status = _ends(reader, found.get("ends"), (*where, "ends"))
    ready = reader.day(found["ready"], (*where, "ready")) if "ready" in found else None
    handoff = reader.day(found["handoff"], (*where, "handoff")) if "handoff" in found else None
    score = None
    if "score" in found:
        if isinstance(found["score"], int) and not isinstance(found["score"], bool):
            score = (found["score"], reader.line((*where, "score")))
        else:
            reader.problem((*where, "score"), f"score: {found['score']!r} is not a number")
    return Expect(receives, never, ends, status, ready, handoff, score)


def _ends(reader: _Reader, value: Any, where: Path_) -> tuple[Day | None, tuple[str, int] | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return reader.day(value, where), None
    found = reader.keys(value, where, ("day", "status"), "ends")
    day = reader.day(found["day"], (*where, "day")) if "day" in found else None
    status = found.get("status")
    if status is None:
        return day, None
    if status not in _END_STATUSES:
        reader.problem((*where, "status"), f"status: {status!r} is not one of "
                       f"{', '.join(_END_STATUSES)}")  # fmt: skip
        return day, None
    return day, (status, reader.line((*where, "status")))


def load_tests(tests_dir: Path, catalog: Catalog, zone: str) -> tuple[
    list[TestFile], list[SequenceError]
]:  # fmt: skip
    """Every test file of a workspace, and every problem found reading them."""
    files: list[TestFile] = []
    problems: list[SequenceError] = []
    root = tests_dir.parent.parent
    for path in sorted(tests_dir.glob("*.y*ml")) if tests_dir.is_dir() else []:
        loaded, errs = load_test_file(path, root, catalog, zone)
        problems.extend(errs)
        if loaded is not None:
            files.append(loaded)
    names: dict[str, str] = {}
    for test in files:
        for persona in test.personas:
            if persona.name in names and names[persona.name] != test.path:
                problems.append(SequenceError(test.path, persona.line, f"persona "
                                f"'{persona.name}' is also in {names[persona.name]}: names "
                                "share one snapshot folder"))  # fmt: skip
            names.setdefault(persona.name, test.path)
    return files, problems
