"""One `send-due` run: claim what is due in batches, recover what was lost, dispatch."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from nurture import clock
from nurture.broadcast.fanout import fan_out_due_broadcasts
from nurture.db import session_scope
from nurture.handoff import due_handoffs
from nurture.scheduling import BATCH, claim_due, requeue_stale
from nurture.sequences import catalog_for
from nurture.settings import Settings
from nurture.tasks import backlog, dispatch, dispatch_handoffs


def run_send_due(settings: Settings, limit: int | None = None) -> Counter[str]:
    """Safe to run on many hosts at once: each batch is claimed in its own transaction
    (FOR UPDATE SKIP LOCKED on PostgreSQL), so concurrent runs share the work."""
    catalog = catalog_for(settings.sequences_dir)
    counts = fan_out_due_broadcasts(settings)  # counts["broadcast"]: newsletter emails
    while (limit is None or counts["due"] < limit) and not counts["server-down"]:
        size = BATCH if limit is None else min(BATCH, limit - counts["due"])
        with session_scope(settings) as session:
            ids = claim_due(session, catalog, clock.now(), size, settings=settings)
        counts["due"] += len(ids)
        counts.update(dispatch(settings, ids))
        if len(ids) < size or counts["server-down"]:
            break
    if not counts["server-down"]:  # embedded, with the server down: all of it waits
        recover(settings, counts)
    with session_scope(settings) as session:
        handoffs = due_handoffs(session, clock.now())
    counts["handoffs"] += dispatch_handoffs(settings, handoffs)
    return counts


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
        counts.update(dispatch(settings, stale.ids))
        if len(stale.ids) < BATCH or counts["server-down"]:
            break


def summary(counts: Counter[str], embedded: bool) -> str:
    parts = [f"{counts['due']} due"]
    if counts["broadcast"]:
        parts.append(f"{counts['broadcast']} broadcast")
    if counts["recovered"]:
        taken_back = counts["taken back"]
        parts.append(f"{counts['recovered']} retried or recovered"
                     + (f" ({taken_back} from a stopped worker)" if taken_back else ""))  # fmt: skip
    if embedded:
        parts += [f"{counts[k]} {k}" for k in ("sent", "retry", "failed", "skipped") if counts[k]]
    else:
        parts.append(f"{counts['enqueued']} enqueued")
    return "send-due: " + ", ".join(parts)
