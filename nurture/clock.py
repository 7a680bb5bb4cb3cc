"""The current time, overridable per context so `simulate` can run the real code path
through days of a sequence in a moment (and tests can do the same without patching)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_frozen: ContextVar[datetime | None] = ContextVar("nurture_clock", default=None)


def now() -> datetime:
    """Aware UTC now (freezegun-compatible: it reads `datetime.now`)."""
    return _frozen.get() or datetime.now(UTC)


@contextmanager
def frozen_at(moment: datetime) -> Iterator[None]:
    token = _frozen.set(moment.astimezone(UTC))
    try:
        yield
    finally:
        _frozen.reset(token)


def set_frozen(moment: datetime) -> None:
    """Move a clock already frozen with `frozen_at` (used to step through a timeline)."""
    _frozen.set(moment.astimezone(UTC))
