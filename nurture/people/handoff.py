"""The sales handoff: when a subscriber first becomes sales-ready, tell sales once.

A `handoffs` row is written in the same transaction that records `sales_ready`; it is
the outbox. Telling sales (the webhook, the email) is delivery/handoffs.py's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.content.sequences import Sequence
from nurture.people.engagement import Facts
from nurture.settings import Settings
from nurture.store.tables import Event, Handoff, HandoffStatus, Subscriber

log = logging.getLogger(__name__)

#: A handoff claimed this long ago whose process died is tried again.
STALE_SENDING = timedelta(minutes=10)


def mark_ready(
    session: Session, settings: Settings, sub: Subscriber, seq: Sequence, facts: Facts,
    now: datetime,
) -> int | None:  # fmt: skip
    """Record that a subscriber became ready; a handoff id the first time, else None."""
    score = facts.score(seq.readiness)
    sub.score = max(sub.score or 0, score)
    if sub.ready_at is not None:
        return None
    sub.ready_at = now
    evidence = {
        "opened": sorted(facts.opened), "clicked": sorted(facts.clicked),
        "events": sorted(facts.events),
    }  # fmt: skip
    session.add(Event(subscriber_id=sub.id, kind="sales_ready", at=now,
                      data={"sequence": seq.name, "score": score, "evidence": evidence}))  # fmt: skip
    wanted = bool(settings.sales_webhook_url or settings.sales_email)
    handoff = Handoff(
        subscriber_id=sub.id, sequence=seq.name, score=score, evidence=evidence, created_at=now,
        status=HandoffStatus.PENDING if wanted else HandoffStatus.RECORDED,
    )  # fmt: skip
    session.add(handoff)
    session.flush()
    return handoff.id if wanted else None


def payload(sub: Subscriber, handoff: Handoff, tags: list[str]) -> dict[str, Any]:
    return {
        "event": "sales_ready",
        "subscriber": {
            "email": sub.email,
            "first_name": sub.first_name,
            "tags": tags,
            "timezone": sub.timezone,
        },  # fmt: skip
        "sequence": handoff.sequence,
        "score": handoff.score,
        "ready_at": sub.ready_at.isoformat() if sub.ready_at else None,
        "evidence": handoff.evidence,
    }


def due_handoffs(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Handoffs whose retry time has come (or that were never picked up)."""
    return list(
        session.scalars(
            select(Handoff.id)
            .where(
                ((Handoff.status == HandoffStatus.RETRY) & (Handoff.next_attempt_at <= now))
                | (Handoff.status == HandoffStatus.PENDING)
                | (
                    (Handoff.status == HandoffStatus.SENDING)
                    & (Handoff.claimed_at <= now - STALE_SENDING)
                )
            )
            .order_by(Handoff.id)
            .limit(limit)
        )
    )
