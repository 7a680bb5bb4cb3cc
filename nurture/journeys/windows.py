"""Send windows in the subscriber's own time zone, exact across DST changes.

A step due outside its window, or at a wall-clock time that does not exist that day
(the spring-forward gap), moves to the next moment the window is open.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from nurture.content.sequences import SendWindow

_MINUTE = timedelta(minutes=1)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first real instant at or after this wall-clock time (skipping a DST gap)."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(instant, zone) == wall:
        return instant
    # `wall` falls in a gap: walk from just before it to the first instant whose wall
    # clock has reached it (the end of the gap). Gaps are at most a few hours.
    probe = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    while _wall(probe, zone) < wall:
        probe += _MINUTE
    return probe


def _open_at(wall: datetime, window: SendWindow) -> bool:
    minute = wall.hour * 60 + wall.minute
    return wall.weekday() in window.weekdays and window.start_minute <= minute < window.end_minute


def next_opening(due: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after `due` when the window is open (UTC)."""
    if window is None:
        return due
    wall = _wall(due, zone)
    if _open_at(wall, window):
        return due
    start = time(window.start_minute // 60, window.start_minute % 60)
    for days_ahead in range(0, 8):
        day = wall.date() + timedelta(days=days_ahead)
        if day.weekday() not in window.weekdays:
            continue
        opening = datetime.combine(day, start)
        if opening < wall:
            continue  # today's opening has passed (we are after the window)
        instant = _instant(opening, zone)
        if _open_at(_wall(instant, zone), window):
            return max(instant, due)
    raise ValueError(f"send window {window.days} {window.hours} never opens")
