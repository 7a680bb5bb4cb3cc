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
from typing import Any

from sqlalchemy import Engine, case, delete
from sqlalchemy.dialects import postgresql, sqlite

from nurture import clock
from nurture.db import get_engine
from nurture.models import RateCount
from nurture.settings import Settings

#: Windows that are over are swept from the table once in this many hits.
SWEEP_EVERY = 500


class DatabaseCounts:
    """Fixed windows ("5 per minute; 30 per hour") kept in the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hits = itertools.count(1)

    def hit(self, keys: Sequence[str], windows: Sequence[tuple[int, int]]) -> int:
        """Count one request in each window (amount, seconds): 0 when all had room, else
        the seconds until the full one resets (later windows are then not counted)."""
        engine: Engine = get_engine(self.settings)
        now = clock.now()
        table = RateCount.__table__.c
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        with engine.begin() as conn:
            if next(self._hits) % SWEEP_EVERY == 0:
                conn.execute(delete(RateCount).where(RateCount.resets_at <= now))
            for key, (amount, seconds) in zip(keys, windows, strict=True):
                stmt = insert(RateCount).values(
                    key=key, count=1, resets_at=now + timedelta(seconds=seconds)
                )
                over = table.resets_at <= now
                stmt = stmt.on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "count": case((over, 1), else_=table.count + 1),
                        "resets_at": case((over, stmt.excluded.resets_at), else_=table.resets_at),
                    },
                ).returning(RateCount.count, RateCount.resets_at)
                count, resets_at = conn.execute(stmt).one()
                if count > amount:
                    return max(1, math.ceil((resets_at - now).total_seconds()))
        return 0
