"""What the send path may write to logs and to a delivery's `error`: never a message
body or a link token. An email carries the subscriber's confirm and unsubscribe tokens,
and some exceptions carry the email (a UnicodeEncodeError's repr holds the whole
string it could not encode), so an unexpected error is described by its type and
where it was raised, and an address by its domain."""

from __future__ import annotations

import traceback
from pathlib import Path


def domain_of(address: str) -> str:
    """`@example.com`: enough to see which provider refuses, without naming the person."""
    domain = address.rpartition("@")[2]
    return f"@{domain}" if domain else "@?"


def bug_summary(error: BaseException) -> str:
    """`internal error: TypeError at compose.py:42`, without the exception's text."""
    where = traceback.extract_tb(error.__traceback__)
    place = f" at {Path(where[-1].filename).name}:{where[-1].lineno}" if where else ""
    return f"internal error: {type(error).__name__}{place}"


def frames(error: BaseException) -> str:
    """The traceback's frames (file, line, code), without the exception's text."""
    return "".join(traceback.format_tb(error.__traceback__)).rstrip()
