"""Durations as marketers write them: `45m`, `12h`, `2d`, `1w`, `2 days`, `1d 12h`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
}  # fmt: skip
#: Longest delay a sequence may use: a later send time would leave the calendar, and
#: anything near it is a typo.
LONGEST = timedelta(days=3653)
_LONGEST_MINUTES = int(LONGEST.total_seconds()) // 60
_MINUTES = {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080}
_TERM = re.compile(r"\s*(\d{1,12})\s*([a-z]+)\s*")


def parse_duration(text: str | int) -> timedelta:
    """Parse a duration or raise ValueError with a message fit for a marketer."""
    if isinstance(text, int) and not isinstance(text, bool) and text == 0:
        return timedelta(0)
    raw = str(text).strip().lower()
    minutes, pos = 0, 0  # an int: timedelta would overflow on a long typo
    for match in _TERM.finditer(raw):
        if match.start() != pos or match.group(2) not in _UNITS:
            break
        minutes += int(match.group(1)) * _MINUTES[_UNITS[match.group(2)]]
        pos = match.end()
    shown = repr(text) if len(str(text)) <= 40 else repr(f"{str(text)[:37]}...")
    if not raw or pos != len(raw):
        raise ValueError(
            f"bad duration {shown}: write a number and a unit, like 45m, 12h, 2d, 1w or '2 days'"
        )
    if minutes > _LONGEST_MINUTES:
        raise ValueError(f"duration {shown} is longer than ten years: is a digit too many?")
    return timedelta(minutes=minutes)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling, e.g. `2d`, `1d 12h`, `0m`."""
    minutes = int(delta.total_seconds() // 60)
    parts = []
    for unit, size in (("w", 10080), ("d", 1440), ("h", 60), ("m", 1)):
        if minutes >= size:
            parts.append(f"{minutes // size}{unit}")
            minutes %= size
    return " ".join(parts) or "0m"
