"""How fast and how many at once: NURTURE_SEND_RATE and NURTURE_SMTP_CONCURRENCY, for all
workers together, enforced with rate limiters the queue hands in (queue.throttle_for
builds Dramatiq's, which keep their counters in Redis with a broker and in this process
in embedded mode).

A thread that finds no room waits here and asks again instead of raising
RateLimitExceeded, which would use up a Dramatiq retry and wait at least 15 s.

- The rate is a bucket limiter with short buckets (MIN_BUCKET_MS), so 50/s means five
  sends every 100 ms rather than 50 at the top of each second; a bucket of a few sends
  rather than one also forgives a thread that wakes a little late.
- Concurrency is one limiter of limit 1 per SMTP slot. A thread holds a slot, and its
  one SMTP connection, for a batch of sends; the connection is closed when the slot is
  given back, so connections at once never exceed the setting. A single limiter of
  limit N would not do: its counter's expiry is renewed by every acquire, so a slot held
  by a killed worker would never come back while others keep sending. A slot of its own
  expires SLOT_TTL_MS after it was taken.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

#: Keys in the rate limiter backend (prefixed again by nothing: use a Redis db of your own).
RATE_KEY = "nurture:send-rate"
SLOT_KEY = "nurture:smtp-slot"
#: Finest rate bucket; finer buckets spread sends more evenly but cost more Redis calls.
MIN_BUCKET_MS = 100
#: A slot whose holder died comes back after this long. A live holder gives it back after
#: one batch (queue.BATCH_BUDGET, plus the send in progress).
SLOT_TTL_MS = 120_000
#: Seconds between two looks for a free SMTP slot (with jitter).
SLOT_POLL = 0.02


class Gate(Protocol):
    """Called before each send: blocks until the send may go, and answers False when the
    caller should stop instead (shutting down, or out of time for this batch)."""

    #: Waits for a send rate: worth asking only for deliveries that are still to send.
    paced: bool

    def __call__(self) -> bool: ...


class Limiter(Protocol):
    """A rate limiter as Dramatiq's are: `acquire` enters with True when there was room."""

    def acquire(self, *, raise_on_failure: bool = True) -> AbstractContextManager[bool]: ...


def bucket_for(rate: float) -> tuple[int, int]:
    """(sends per bucket, bucket in ms) for `rate` per second, with buckets near MIN_BUCKET_MS."""
    limit = max(1, math.ceil(rate * MIN_BUCKET_MS / 1000))
    return limit, max(1, round(limit * 1000 / rate))


class Throttle:
    """The limits one process applies; `batch()` hands out a gate for a run of sends."""

    def __init__(self, rate: Limiter | None, bucket_ms: int, slots: list[Limiter]):
        """`rate`: a bucket limiter of `bucket_ms` buckets (bucket_for), or None for no
        rate; `slots`: one limiter of limit 1 per SMTP slot (none: no limit)."""
        self.rate, self.bucket_ms, self.slots = rate, bucket_ms, slots

    @contextmanager
    def batch(
        self, *, should_stop: Callable[[], bool] = lambda: False,
        on_release: Callable[[], None] = lambda: None,
    ) -> Iterator[Gate]:  # fmt: skip
        """A gate for one batch: its first call takes an SMTP slot, kept until the batch
        ends; every call waits for the rate. `on_release` runs before the slot is given
        back (it closes this thread's SMTP connection)."""
        gate = _BatchGate(self, should_stop)
        try:
            yield gate
        finally:
            if gate.slot is not None:
                try:
                    on_release()
                finally:
                    gate.slot.close()

    def _take_slot(self, should_stop: Callable[[], bool]) -> ExitStack | None:
        while not should_stop():
            for slot in random.sample(self.slots, len(self.slots)):
                with ExitStack() as attempt:
                    if attempt.enter_context(slot.acquire(raise_on_failure=False)):
                        return attempt.pop_all()  # held until the batch ends
            time.sleep(SLOT_POLL * random.uniform(0.5, 1.5))
        return None

    def _wait_rate(self, should_stop: Callable[[], bool]) -> bool:
        if self.rate is None:
            return True
        while not should_stop():
            with self.rate.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return True
            # Nothing left in this bucket: sleep to the next one (jitter spreads the race).
            now_ms = time.time() * 1000
            wait_ms = self.bucket_ms - now_ms % self.bucket_ms
            time.sleep((wait_ms + random.uniform(0, 2)) / 1000)
        return False


class _BatchGate:
    def __init__(self, throttle: Throttle, should_stop: Callable[[], bool]):
        self.throttle, self.should_stop = throttle, should_stop
        self.paced = throttle.rate is not None
        self.slot: ExitStack | None = None

    def __call__(self) -> bool:
        if self.throttle.slots and self.slot is None:
            self.slot = self.throttle._take_slot(self.should_stop)
            if self.slot is None:
                return False
        return self.throttle._wait_rate(self.should_stop)
