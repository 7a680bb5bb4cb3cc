"""Read-only numbers for `broadcast list` and `broadcast status`. Test copies are never
counted with the real emails; they are shown apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from nurture.journeys.experiments import Experiment, ended, of_broadcast
from nurture.store.tables import (
    Broadcast,
    BroadcastState,
    Delivery,
    DeliveryStatus,
    Event,
    Subscriber,
)

#: Delivery states in the order `broadcast status` shows them.
COLUMNS = ("scheduled", "queued", "sending", "retry", "sent", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class Status:
    broadcast: Broadcast
    counts: dict[str, int]
    opened: int  # people, not opens; bots left out
    clicked: int
    tests: list[tuple[str, datetime | None, str]]  # (address, sent at, status), newest first
    #: Its variants and test share, and the winner once picked.
    experiment: Experiment | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def status(session: Session, broadcast: Broadcast) -> Status:
    real = (Delivery.broadcast_id == broadcast.id) & Delivery.is_test.is_(False)
    counts = dict(
        session.execute(
            select(Delivery.status, func.count()).where(real).group_by(Delivery.status)
        ).all()
    )
    people = {
        kind: session.scalar(
            select(func.count(func.distinct(Event.subscriber_id)))
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(real, Event.kind == kind, Event.bot.is_(False))
        )
        or 0
        for kind in ("open", "click")
    }
    tests = session.execute(
        select(Subscriber.email, Delivery.sent_at, Delivery.status)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.broadcast_id == broadcast.id, Delivery.is_test.is_(True))
        .order_by(Delivery.id.desc())
    ).all()
    return Status(broadcast, counts, people["open"], people["click"],
                  [(t.email, t.sent_at, t.status) for t in tests],
                  of_broadcast(broadcast, ended(session)))  # fmt: skip


def listing(session: Session, limit: int = 50) -> list[tuple[Broadcast, int, int]]:
    """(broadcast, emails sent, emails in all) for the latest broadcasts, newest first."""
    rows = session.scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)).all()
    sent = case((Delivery.status == DeliveryStatus.SENT, 1), else_=0)
    totals = {
        r.broadcast_id: (int(r.sent or 0), int(r.total))
        for r in session.execute(
            select(Delivery.broadcast_id, func.sum(sent).label("sent"),
                   func.count().label("total"))
            .where(Delivery.broadcast_id.in_([b.id for b in rows]), Delivery.is_test.is_(False))
            .group_by(Delivery.broadcast_id)
        )
    }  # fmt: skip
    return [(b, *totals.get(b.id, (0, 0))) for b in rows]


def archived(session: Session, limit: int = 50) -> list[Broadcast]:
    """Issues on the public archive: marked `archive`, and started (a draft, a scheduled
    or a cancelled-before-sending issue is not published), newest first."""
    return list(
        session.scalars(
            select(Broadcast)
            .where(Broadcast.archive.is_(True), Broadcast.started_at.is_not(None),
                   Broadcast.state != BroadcastState.CANCELLED)
            .order_by(Broadcast.started_at.desc(), Broadcast.id.desc())
            .limit(limit)
        )
    )  # fmt: skip


def published(session: Session, slug: str) -> Broadcast | None:
    """The issue whose web version is at /archive/SLUG: any issue that went out, listed or
    not (its emails link here), never a draft."""
    return session.scalar(
        select(Broadcast).where(Broadcast.slug == slug, Broadcast.started_at.is_not(None))
    )
