"""The `[sunset]` policy of nurture.toml: when a silent subscriber is sent a win-back, and
what happens to them when it does not win them back.

    [sunset]
    inactive_for = "120d"        # no open and no click for this long (bot opens aside)
    winback = "win-back"         # optional: the sequence they are sent first
    then = "unsubscribe"         # or "stop_broadcasts": sequences go on, newsletters stop
    grace = "7d"                 # optional: how long after the win-back's last email
                                 # an open or a click still wins them back

It is read with the other settings, so a typo stops every command with the line at
fault rather than unsubscribing people by a rule nobody wrote. Whether the win-back
sequence exists is `validate`'s to say (nurture.content.winback): the settings know no
sequences.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from nurture.durations import format_duration, parse_duration
from nurture.errors import ConfigError

TABLE = "sunset"
#: What `then` may say: unsubscribe them, or keep them on their sequences without
#: newsletters.
UNSUBSCRIBE, STOP_BROADCASTS = "unsubscribe", "stop_broadcasts"
THEN = (UNSUBSCRIBE, STOP_BROADCASTS)
#: After the win-back's last email, the time a reader has to open or click it: unsubscribing
#: the minute a "shall we keep writing?" email is sent would make its question moot.
DEFAULT_GRACE = timedelta(days=7)
#: Shortest `inactive_for`: anything shorter is most likely a wrong unit ("120m").
SHORTEST = timedelta(days=7)
KEYS = ("inactive_for", "winback", "then", "grace")
_HEADER = re.compile(r"^\s*\[\s*(\"?)([^\]\"]+)\1\s*\]")
_KEY = re.compile(r"^\s*(\"?)([A-Za-z0-9_.-]+)\1\s*=")


@dataclass(frozen=True)
class SunsetPolicy:
    inactive_for: timedelta
    then: str
    winback: str | None = None
    grace: timedelta = DEFAULT_GRACE
    #: (key, line in nurture.toml) as written, for problems found later (`validate`).
    lines: tuple[tuple[str, int], ...] = ()

    def line_of(self, key: str) -> int | None:
        found = dict(self.lines)
        return found.get(key, found.get(TABLE))

    def describe(self) -> str:
        """The policy in one line, as `nurture sunset` prints it."""
        then = "unsubscribe them" if self.then == UNSUBSCRIBE else "stop their newsletters"
        first = (f"send them '{self.winback}'; if still silent {_days(self.grace)} "
                 "after its last email, " if self.winback else "")  # fmt: skip
        return f"no open or click for {_days(self.inactive_for)}: {first}{then}"


def _days(delta: timedelta) -> str:
    """`120d` rather than `17w 1d`: the policy is thought of in days."""
    whole = delta.days if delta == timedelta(days=delta.days) else None
    return f"{whole}d" if whole else format_duration(delta)


def key_lines(text: str) -> dict[str, int]:
    """The line of `[sunset]` (key "sunset") and of each key under it; a dotted
    `sunset.x = …` or an inline `sunset = {…}` counts as written at its own line."""
    lines: dict[str, int] = {}
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            inside = header.group(2).strip() == TABLE
            if inside:
                lines.setdefault(TABLE, number)
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        name = key.group(2)
        if inside:
            lines.setdefault(name, number)
        elif name == TABLE or name.startswith(TABLE + "."):
            lines.setdefault(TABLE, number)
            lines.setdefault(name.removeprefix(TABLE + "."), number)
    return lines


def load_policy(workspace: Path, toml: dict[str, Any]) -> SunsetPolicy | None:
    """The policy from nurture.toml's parsed `toml`, None when it has no `[sunset]`;
    ConfigError listing every problem, each as `nurture.toml:LINE: message`."""
    if TABLE not in toml:
        return None
    path = workspace / "nurture.toml"
    lines = key_lines(path.read_text(encoding="utf-8")) if path.exists() else {}
    problems: list[tuple[int | None, str]] = []

    def fail(key: str, message: str) -> None:
        problems.append((lines.get(key, lines.get(TABLE)), f"[sunset] {message}"))

    table = toml[TABLE]
    if not isinstance(table, dict):
        raise ConfigError(f"nurture.toml:{lines.get(TABLE, 1)}: [sunset] must be a table, like "
                          '[sunset] with inactive_for = "120d" and then = "unsubscribe"')  # fmt: skip
    for key in table:
        if key not in KEYS:
            fail(key, f"unknown key {key!r}{_hint(key, KEYS)}")
    inactive_for = _duration(table, "inactive_for", None, fail)
    grace = _duration(table, "grace", DEFAULT_GRACE, fail)
    if inactive_for is not None and inactive_for < SHORTEST:
        fail("inactive_for", f"inactive_for {table['inactive_for']!r} is shorter than "
             f"{SHORTEST.days} days: is the unit right (like \"120d\")?")  # fmt: skip
    then = table.get("then")
    if then is None:
        fail(TABLE, 'needs then = "unsubscribe" or then = "stop_broadcasts"')
    elif then not in THEN:
        fail("then", f"then = {then!r}: use \"unsubscribe\" or \"stop_broadcasts\""
             f"{_hint(str(then), THEN)}")  # fmt: skip
    winback = table.get("winback")
    if winback is not None and (not isinstance(winback, str) or not winback.strip()):
        fail("winback", f'winback = {winback!r}: name a sequence, like winback = "win-back"')
    if problems:
        shown = sorted(problems, key=lambda p: p[0] or 0)
        raise ConfigError("\n".join(f"nurture.toml:{line or 1}: {msg}" for line, msg in shown))
    assert inactive_for is not None and isinstance(then, str)  # checked above
    return SunsetPolicy(inactive_for=inactive_for, then=then,
                        grace=DEFAULT_GRACE if grace is None else grace,
                        winback=winback.strip() if isinstance(winback, str) else None,
                        lines=tuple(sorted(lines.items())))  # fmt: skip


def _duration(table: dict[str, Any], key: str, default: timedelta | None,
              fail: Any) -> timedelta | None:  # fmt: skip
    if key not in table:
        if default is None:
            fail(TABLE, f'needs {key}, like {key} = "120d"')
        return default
    value = table[key]
    try:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f'{value!r} is not a duration: write it in quotes, like "120d"')
        return parse_duration(value)
    except ValueError as e:
        fail(key, f"{key}: {e}")
        return None


def _hint(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name.lower().replace("-", "_"), known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
