"""Request limits (signups per client address, uses of a personal link): fixed windows
("5 per minute; 30 per hour") counted in Redis, shared by every web process, or in
embedded mode in the database, which every gunicorn worker shares too
(nurture.people.signups.request_counts): counted in each worker's memory, 5 a minute
let 10 through with 2.

Why not flask-limiter: one route is limited, and its hooks around every request
(headers, exemptions, a round trip per window, two more for the headers) cost a signup
more CPU than the signup's own statements did, measured under gunicorn. Here a signup
costs one round trip: a Lua script counts every window and answers which one is full
and for how long, which becomes `Retry-After`. The limit's syntax is the `limits`
library's, as before.

Store unreachable: count in memory for a while rather than refuse every signup or fail
it; each web process then limits on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import cache
from typing import Protocol

import redis
from limits import RateLimitItem, parse_many
from sqlalchemy.exc import SQLAlchemyError

from nurture.redisconn import redis_client

log = logging.getLogger(__name__)

#: Seconds to count in memory after Redis failed, before trying it again.
FALLBACK_SECONDS = 30.0
#: A limit check must never hold a signup for long.
REDIS_TIMEOUT = 2.0
PREFIX = "nurture:limit"
#: KEYS: a counter per window; ARGV: each window's seconds, then each one's limit.
#: Answers 0 when every window had room, else the seconds until the full one resets.
_HIT = """
local n = #KEYS
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  if count > tonumber(ARGV[n + i]) then
    return math.max(redis.call('TTL', key), 1)
  end
end
return 0
"""


@cache
def windows(limit: str) -> tuple[RateLimitItem, ...]:
    """'5 per minute; 30 per hour', shortest window first (settings checked the syntax)."""
    return tuple(sorted(parse_many(limit), key=lambda w: w.get_expiry()))


class SharedCounts(Protocol):
    def hit(self, keys: Sequence[str], windows: Sequence[tuple[int, int]]) -> int: ...


class Throttle:
    def __init__(self, redis_url: str | None, shared: SharedCounts | None = None) -> None:
        """Counts in Redis when `redis_url` is set, else in `shared` (the database),
        else in this process's memory."""
        self.memory = MemoryCounts()
        self.shared = shared
        self.redis: redis.Redis | None = None
        if redis_url:
            self.redis = redis_client(redis_url, REDIS_TIMEOUT)
            self._script = self.redis.register_script(_HIT)
        self._down_until = 0.0

    def hit(self, limit: str, *key: str) -> int:
        """Count one request for `key`: 0 when allowed, else the seconds to wait."""
        items = windows(limit)
        keys = [":".join((PREFIX, *key, str(w.amount), str(w.get_expiry()))) for w in items]
        if time.monotonic() >= self._down_until:
            try:
                if self.redis is not None:
                    seconds = [w.get_expiry() for w in items]
                    return int(self._script(keys, [*seconds, *(w.amount for w in items)]))
                if self.shared is not None:
                    return self.shared.hit(keys, [(w.amount, w.get_expiry()) for w in items])
            except (redis.RedisError, SQLAlchemyError) as e:
                self._down_until = time.monotonic() + FALLBACK_SECONDS
                log.warning("rate limit store unreachable (%s): counting in memory for %.0f s",
                            str(e).splitlines()[0], FALLBACK_SECONDS)  # fmt: skip
        return self.memory.hit(keys, items)


class MemoryCounts:
    """The same fixed windows in this process (the script above, in Python)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def hit(self, keys: list[str], items: tuple[RateLimitItem, ...]) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 10_000:  # forget windows that are over
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            for key, item in zip(keys, items, strict=True):
                count, ends = self._counts.get(key, (0, 0.0))
                if ends <= now:
                    count, ends = 0, now + item.get_expiry()
                self._counts[key] = (count + 1, ends)
                if count + 1 > item.amount:
                    return max(1, round(ends - now))
        return 0
