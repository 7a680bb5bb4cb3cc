"""Tags: the one rule for how a tag is written, whichever path reads or stores it."""

from __future__ import annotations

import re
from collections.abc import Iterable

from nurture.content.fields import clean_text
from nurture.errors import SubscriberError

#: What a tag may look like, on every path (a tag names a `trigger: tag:<name>`).
TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


def tag_name(raw: str) -> str:
    """A tag as stored and looked up: trimmed, lower case."""
    return raw.strip().lower()


def tag_names(raw: Iterable[str]) -> list[str]:
    """Tags as stored: normalised, unique, sorted, blanks dropped (not checked against TAG)."""
    return sorted({tag_name(t) for t in raw if t.strip()})


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags as every path stores them: lower case, unique, each checked against TAG.
    SubscriberError names the first bad one."""
    names = tag_names(tags)
    bad = [t for t in names if not TAG.match(t)]
    if bad:
        raise SubscriberError(
            f"{clean_text(bad[0])[:70]!r} is not a tag: use letters, digits, '-', '_', '.' and ':'"
        )
    return names
