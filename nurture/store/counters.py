"""Request counters in the database, for web processes that share no Redis.

Embedded mode runs `nurture serve` with several gunicorn workers; counted in each
worker's memory, a limit of 5 a minute let 10 through with 2 workers. The database is
the one thing they all share, so the windows are rows of `rate_counts`: one upsert per
window, in one transaction, answers the count and when the window resets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete
from sqlalchemy.dialects import postgresql, sqlite

from nurture import clock
from nurture.settings import Settings
from nurture.store.engine import get_engine
from nurture.store.tables import RateCount, UTCDateTime

#: Windows that are over are swept from the table once in this many hits.
SWEEP_EVERY = 500


@cache
def _count(dialect: str) -> Any:
    """Upsert one window's row: a new window when the last one is over, else one more."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    t = cast(Table, RateCount.__table__)
    stmt = insert(t).values(key=bindparam("key"), count=1, resets_at=bindparam("resets_at"))
    over = t.c.resets_at <= bindparam("now", type_=UTCDateTime())
    upsert = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={"count": case((over, 1), else_=t.c.count + 1),
              "resets_at": case((over, stmt.excluded.resets_at), else_=t.c.resets_at)},
    )  # fmt: skip
    return upsert.returning(t.c.count, t.c.resets_at)


class DatabaseCounts:
    """Fixed windows ("5 per minute; 30 per hour") kept in the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hits = itertools.count(1)

    def hit(self, keys: Sequence[str], windows: Sequence[tuple[int, int]]) -> int:
        """Count one request in each window (amount, seconds): 0 when all had room, else
        the seconds until the full one resets (later windows are then not counted)."""
        engine = get_engine(self.settings)
        now, count = clock.now(), _count(engine.dialect.name)
        with engine.begin() as conn:
            if next(self._hits) % SWEEP_EVERY == 0:
                conn.execute(delete(RateCount).where(RateCount.resets_at <= now))
            for key, (amount, seconds) in zip(keys, windows, strict=True):
                params = {"key": key, "now": now, "resets_at": now + timedelta(seconds=seconds)}
                hits, resets_at = conn.execute(count, params).one()
                if hits > amount:
                    return max(1, math.ceil((resets_at - now).total_seconds()))
        return 0
