"""One `send-due` run: claim what is due in batches, recover what was lost, dispatch."""

from __future__ import annotations

from collections import Counter

from nurture import clock
from nurture.db import session_scope
from nurture.scheduling import BATCH, claim_due, requeue_stale
from nurture.sequences import catalog_for
from nurture.settings import Settings
from nurture.tasks import dispatch


def run_send_due(settings: Settings, limit: int | None = None) -> Counter[str]:
    """Safe to run on many hosts at once: each batch is claimed in its own transaction."""
    catalog = catalog_for(settings.sequences_dir)
    counts: Counter[str] = Counter()
    while limit is None or counts["due"] < limit:
        size = BATCH if limit is None else min(BATCH, limit - counts["due"])
        with session_scope(settings) as session:
            ids = claim_due(session, catalog, clock.now(), size)
        counts["due"] += len(ids)
        counts.update(dispatch(settings, ids))
        if len(ids) < size:
            break
    while True:
        with session_scope(settings) as session:
            stale = requeue_stale(session, clock.now())
        counts["recovered"] += len(stale)
        counts.update(dispatch(settings, stale))
        if len(stale) < BATCH:
            break
    return counts


def summary(counts: Counter[str], embedded: bool) -> str:
    parts = [f"{counts['due']} due"]
    if counts["recovered"]:
        parts.append(f"{counts['recovered']} retried or recovered")
    if embedded:
        parts += [f"{counts[k]} {k}" for k in ("sent", "retry", "failed", "skipped") if counts[k]]
    else:
        parts.append(f"{counts['enqueued']} enqueued")
    return "send-due: " + ", ".join(parts)
