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
_TERM = re.compile(r"\s*(\d+)\s*([a-z]+)\s*")


def parse_duration(text: str | int) -> timedelta:
    """Parse a duration or raise ValueError with a message fit for a marketer."""
    if isinstance(text, int) and not isinstance(text, bool) and text == 0:
        return timedelta(0)
    raw = str(text).strip().lower()
    total, pos = timedelta(0), 0
    for match in _TERM.finditer(raw):
        if match.start() != pos or match.group(2) not in _UNITS:
            break
        total += timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        pos = match.end()
    if not raw or pos != len(raw):
        raise ValueError(
            f"bad duration {text!r}: write a number and a unit, like 45m, 12h, 2d, 1w or '2 days'"
        )
    return total


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling, e.g. `2d`, `1d 12h`, `0m`."""
    minutes = int(delta.total_seconds() // 60)
    parts = []
    for unit, size in (("w", 10080), ("d", 1440), ("h", 60), ("m", 1)):
        if minutes >= size:
            parts.append(f"{minutes // size}{unit}")
            minutes %= size
    return " ".join(parts) or "0m"
