"""Time zones: the one place a subscriber's zone name becomes a zone.

A name no longer known (a zone removed from tzdata, a typo written by an import before
validation) falls back on NURTURE_TIMEZONE with a log line, never an error: one
subscriber's stale zone must not stop a send-due or a broadcast for everyone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def zone_for(name: str | None, default: str) -> ZoneInfo:
    """A subscriber's zone: theirs, else `default` (NURTURE_TIMEZONE), else UTC."""
    for candidate in (name, default):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            log.warning("unknown time zone %r: using %s", candidate, default or "UTC")
    return ZoneInfo("UTC")


class Timed(Protocol):
    """What a broadcast row has that says when its emails are due."""

    @property
    def send_at(self) -> datetime | None: ...
    @property
    def local_at(self) -> str | None: ...


def due_at(broadcast: Timed, timezone: str | None, default_zone: str) -> datetime:
    """When one subscriber's email is due: the broadcast's time, or with `--local-time`
    its wall-clock time in the subscriber's zone."""
    assert broadcast.send_at is not None
    if broadcast.local_at is None:
        return broadcast.send_at
    zone = zone_for(timezone, default_zone)
    return datetime.fromisoformat(broadcast.local_at).replace(tzinfo=zone).astimezone(UTC)
