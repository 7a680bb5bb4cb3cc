"""Work the web app hands off: confirmation emails, and due sends under `nurture serve`.

In embedded mode (no NURTURE_REDIS_URL) sending happens in this process, on a thread.
A signup hands its confirmation (or nothing) on only once its answer has been sent
(`call_on_close`), so the answer takes the same work whether or not an email is built,
which keeps it from telling who is already subscribed. With Redis the ids are only
enqueued, and the workers send.

The delivery table is the outbox: if this process dies before a queued email went out,
the next `send-due` (or the loop below) finds it stale and sends it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import redis

from nurture import queue as tasks
from nurture.queue import dispatch
from nurture.send_due import run_send_due, summary
from nurture.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two due-send runs of `nurture serve` in embedded mode.
DEFAULT_SEND_INTERVAL = 60.0


class SendLoop(threading.Thread):
    """Runs `send-due` every `interval` seconds, or sooner when woken (after a confirm)."""

    def __init__(self, settings: Settings, interval: float = DEFAULT_SEND_INTERVAL):
        super().__init__(name="nurture-send-due", daemon=True)
        self.settings, self.interval = settings, interval
        self._wake, self._stopping = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                counts = run_send_due(self.settings)
            except Exception:  # a database hiccup must not end the loop; retry next round
                log.exception("send-due failed; trying again in %s s", self.interval)
            else:
                if counts["due"] or counts["recovered"]:
                    log.info(summary(counts, self.settings.embedded))
            self._wake.wait(self.interval)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(timeout)


class Background:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.loop: SendLoop | None = None
        self._broker: object = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nurture-dispatch")
        self._pending: set[Future[object]] = set()
        self._lock = threading.Lock()

    def send(self, delivery_ids: Iterable[int | None]) -> None:
        """Send (embedded) or enqueue these deliveries, after the caller's commit."""
        ids = [i for i in delivery_ids if i is not None]
        if not ids:
            return
        if not self.settings.embedded:
            dispatch(self.settings, ids)
            return
        self._submit(ids)

    def send_signup(self, delivery_id: int | None) -> None:
        """Hand on a signup's confirmation, or nothing, in one queue message either way:
        a known address must not answer sooner than a new one (nurture.people.signups)."""
        ids = [] if delivery_id is None else [delivery_id]
        if self.settings.embedded:
            self._submit(ids)
            return
        if tasks.send_deliveries.broker is not self._broker:  # not yet, or rebound since
            self._broker = tasks.configure(self.settings)
        try:
            tasks.send_deliveries.send(ids)
        except redis.RedisError as e:  # the delivery is saved: send-due enqueues it later
            log.warning("cannot enqueue confirmation %s (%s); send-due will", ids, e)

    def _submit(self, ids: list[int]) -> None:
        future = self._pool.submit(self._send, ids)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _send(self, ids: list[int]) -> object:
        try:
            return dispatch(self.settings, ids)
        except Exception:  # recovered by the next send-due, so log and carry on
            log.exception("sending deliveries %s failed; send-due will retry", ids)
            return None

    def _done(self, future: Future[object]) -> None:
        with self._lock:
            self._pending.discard(future)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for what was handed off so far (tests, and a clean shutdown)."""
        with self._lock:
            pending = set(self._pending)
        wait(pending, timeout)

    def wake(self) -> None:
        """Something became due now (a confirmation): send it without waiting a round."""
        if self.loop is not None:
            self.loop.wake()

    def start_loop(self, interval: float) -> SendLoop:
        if self.loop is None:
            self.loop = SendLoop(self.settings, interval)
            self.loop.start()
        return self.loop

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        self.drain()
        self._pool.shutdown(wait=False)
