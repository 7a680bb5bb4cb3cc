"""Sales-ready subscribers with the evidence a salesperson reads: what they opened,
clicked and did, their live score and where their handoff stands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from nurture.content.sequences import catalog_for
from nurture.people.engagement import live_scores
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Handoff, Subscriber


def sales_ready(settings: Settings, since: datetime | None = None) -> list[dict[str, Any]]:
    """One row per lead, the most recently ready first (only those ready on or after
    `since`): email, first_name, score, ready_at, sequence, opened, clicked, events,
    handoff. Lists stay lists; a missing value is ""."""
    query = (
        select(Subscriber, Handoff)
        .outerjoin(Handoff, Handoff.subscriber_id == Subscriber.id)
        .where(Subscriber.ready_at.is_not(None))
        .order_by(Subscriber.ready_at.desc())
    )
    if since is not None:
        query = query.where(Subscriber.ready_at >= since)
    catalog = catalog_for(settings.sequences_dir)
    rows = []
    with session_scope(settings) as session:
        found = session.execute(query).all()
        scores = live_scores(session, [sub.id for sub, _ in found],
                             list(catalog.sequences.values()))  # fmt: skip
        for sub, handoff in found:
            evidence = handoff.evidence if handoff else {}
            rows.append({
                "email": sub.email, "first_name": sub.first_name or "", "score": scores[sub.id],
                "ready_at": sub.ready_at.isoformat() if sub.ready_at else "",
                "sequence": handoff.sequence if handoff else "",
                "opened": evidence.get("opened", []), "clicked": evidence.get("clicked", []),
                "events": evidence.get("events", []),
                "handoff": handoff.status if handoff else "",
            })  # fmt: skip
    return rows
