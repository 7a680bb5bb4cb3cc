"""One `send-due` run: claim what is due in batches, recover what was lost, dispatch."""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from nurture import clock
from nurture.broadcast.fanout import fan_out_due_broadcasts
from nurture.content.sequences import Catalog, catalog_for
from nurture.errors import ConfigError
from nurture.journeys.scheduling import BATCH, claim_due, requeue_stale
from nurture.journeys.versions import record_workspace
from nurture.people.handoff import due_handoffs
from nurture.people.sunset import LOOK_EVERY, WORDS
from nurture.people.sunsetrun import run_sunset
from nurture.queue import CHUNK, backlog, dispatch, dispatch_handoffs
from nurture.settings import Settings
from nurture.store.engine import get_engine, session_scope

#: Claim loops that run side by side, on PostgreSQL with a broker: while one waits for
#: the database (writing a batch is most of its time) another decides its batch. Each
#: takes the subscribers whose id modulo CLAIMERS is its number, so one person's due
#: steps are still decided batch after batch by one loop, and the daily cap sees what
#: their previous batch wrote. Two, for the two cores it was measured on: 100,000 due
#: steps of a 1M-row table in 7.6-8.7 s instead of 10.8 s (bench/schedule.py medians).
CLAIMERS = 2
log = logging.getLogger(__name__)
#: The count that says the policy could not run (its reason is logged).
SUNSET_SKIPPED = "sunset skipped"


def run_send_due(settings: Settings, limit: int | None = None) -> Counter[str]:
    """Safe to run on many hosts at once: each batch is claimed in its own transaction
    (FOR UPDATE SKIP LOCKED on PostgreSQL), so concurrent runs share the work."""
    record_workspace(settings)  # before claiming: an edited delay applies to this run
    catalog = catalog_for(settings.sequences_dir)
    # The sunset policy first: whoever it stops gets no newsletter, and whoever it won back
    # no further win-back email, in this very run.
    sunset_counts = sunset(settings)
    counts = fan_out_due_broadcasts(settings, dispatch)  # counts["broadcast"]: newsletter emails
    counts.update(sunset_counts)
    side_by_side = (limit is None and not settings.embedded
                    and get_engine(settings).dialect.name == "postgresql")  # fmt: skip
    if side_by_side:
        claim_side_by_side(settings, catalog, counts)
    else:  # SQLite writes one at a time anyway; embedded mode sends as it claims
        claim(settings, catalog, counts, limit)
    if not counts["server-down"]:  # embedded, with the server down: all of it waits
        recover(settings, counts)
    with session_scope(settings) as session:
        handoffs = due_handoffs(session, clock.now())
    counts["handoffs"] += dispatch_handoffs(settings, handoffs)
    return counts


def sunset(settings: Settings) -> dict[str, int]:
    """The `[sunset]` policy applied (nurture.people.sunset), its counts in words; the
    newly inactive are looked for once in LOOK_EVERY. A win-back sequence that cannot be
    used stops the policy only, with a warning: the steps due are still sent."""
    if settings.sunset is None:
        return {}
    try:
        return run_sunset(settings, clock.now(), look_every=LOOK_EVERY).counts.in_words()
    except ConfigError as e:
        log.warning("%s", e)
        return {SUNSET_SKIPPED: 1}


def claim(
    settings: Settings, catalog: Catalog, counts: Counter[str], limit: int | None = None
) -> None:
    """Claim and dispatch batch after batch until nothing is due (or `limit` is reached,
    or the SMTP server is down); counts what happened into `counts`."""
    while (limit is None or counts["due"] < limit) and not counts["server-down"]:
        size = BATCH if limit is None else min(BATCH, limit - counts["due"])
        skips: Counter[str] = Counter()
        with session_scope(settings) as session:
            ids = claim_due(session, catalog, clock.now(), size, settings=settings, skips=skips)
        counts["due"] += len(ids) + skips.total()
        counts.update(skips)
        counts.update(dispatch(settings, ids))
        if len(ids) < size or counts["server-down"]:
            break


def claim_side_by_side(settings: Settings, catalog: Catalog, counts: Counter[str]) -> None:
    """`claim` with CLAIMERS threads claiming, each its own part of the subscribers, and
    this one enqueueing what they claimed, CHUNK ids a message as `claim` would (the
    batches' remainders are carried over, not sent as extra small messages).

    A failure in any of them, or Ctrl-C, stops the claimers after the batch they are
    on (what they claimed is safe in the database); then it is raised."""
    stop = threading.Event()
    claimed: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()

    def loop(k: int) -> Counter[str]:
        due: Counter[str] = Counter()  # "due" and the skips, of this claimer's part
        try:
            while not stop.is_set():
                skips: Counter[str] = Counter()
                with session_scope(settings) as session:
                    ids = claim_due(session, catalog, clock.now(), BATCH, settings=settings,
                                    part=(k, CLAIMERS), skips=skips)  # fmt: skip
                due.update(skips, due=len(ids) + skips.total())
                claimed.put(ids)
                if len(ids) < BATCH:
                    break
        except BaseException:
            stop.set()
            raise
        finally:
            claimed.put(None)  # this claimer is done
        return due

    with ThreadPoolExecutor(CLAIMERS, thread_name_prefix="claim") as pool:
        futures = [pool.submit(loop, k) for k in range(CLAIMERS)]
        try:
            pending: list[int] = []
            running = CLAIMERS
            while running:
                ids = claimed.get()
                if ids is None:
                    running -= 1
                    continue
                pending += ids
                whole = len(pending) - len(pending) % CHUNK
                if whole:
                    counts.update(dispatch(settings, pending[:whole]))
                    pending = pending[whole:]
            if pending:
                counts.update(dispatch(settings, pending))
            for future in futures:
                counts.update(future.result())
        except BaseException:
            stop.set()
            raise


def recover(settings: Settings, counts: Counter[str]) -> None:
    """Enqueue again what the queue lost, what is due for a retry, what a worker dropped.

    With a broker, queued deliveries count as lost only while Redis holds no message
    waiting: with a backlog they are most likely in it, and enqueueing them again would
    only grow it. A retry is the Retries middleware's job first; `send-due` steps in
    once it is `requeue_after` late.
    """
    waiting = backlog(settings)
    queued_after = settings.requeue_after if not waiting else None
    retry_after = timedelta(0) if settings.embedded else settings.requeue_after
    while True:
        with session_scope(settings) as session:
            stale = requeue_stale(
                session, clock.now(), queued_after=queued_after, retry_after=retry_after,
                resend_after=settings.resend_after,
            )  # fmt: skip
        counts["recovered"] += len(stale.ids)
        counts["taken back"] += stale.taken_back
        counts["maybe sent"] += stale.maybe_sent
        counts.update(dispatch(settings, stale.ids))
        if len(stale.ids) < BATCH or counts["server-down"]:
            break


def summary(counts: Counter[str], embedded: bool) -> str:
    """`send-due: 18 due, 17 sent, 1 held out`: what became of every due step."""
    parts = [f"{counts['due']} due"]
    if counts["broadcast"]:
        parts.append(f"{counts['broadcast']} broadcast")
    if counts["recovered"]:
        # from a lost worker: never handed to SMTP (sent once), or handed (maybe twice)
        lost = {"taken back unsent": counts["taken back"] - counts["maybe sent"],
                "maybe sent twice": counts["maybe sent"]}  # fmt: skip
        said = ", ".join(f"{n} {what}" for what, n in lost.items() if n)
        parts.append(f"{counts['recovered']} retried or recovered" + (f" ({said})" if said else ""))
    if embedded:
        parts += [f"{counts[k]} {k}" for k in ("sent", "retry", "failed", "skipped") if counts[k]]
    else:
        parts.append(f"{counts['enqueued']} enqueued")
    # due steps skipped when claimed, never queued: so every due step is accounted for
    parts += [f"{counts[k]} {k}" for k in ("held out", "skipped by a gate") if counts[k]]
    sunset_said = [f"{counts[words]} {words}" for words in WORDS.values() if counts[words]]
    if sunset_said:
        parts.append("sunset: " + ", ".join(sunset_said))
    if counts[SUNSET_SKIPPED]:
        parts.append("sunset not applied: its win-back sequence cannot be used (nurture validate)")
    return "send-due: " + ", ".join(parts)
