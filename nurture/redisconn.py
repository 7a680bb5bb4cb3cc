"""The one way nurture opens a Redis client of its own (Dramatiq's broker and rate
limiter backends open theirs from NURTURE_REDIS_URL)."""

from __future__ import annotations

import redis

#: Seconds to connect or to wait for an answer: a Redis that is down must not hold a web
#: request, a send-due or a command for long.
TIMEOUT = 2.0


def redis_client(url: str, timeout: float = TIMEOUT) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
