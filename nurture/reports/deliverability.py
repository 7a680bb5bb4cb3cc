"""Bounce and complaint rates per step, per sequence and per broadcast, and the
complaint rate of the last 30 days that Gmail and Yahoo hold bulk senders to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from nurture.store.tables import Delivery, DeliveryKind, Event

#: Gmail: keep the spam rate under 0.1 %, never reach 0.3 %.
COMPLAINT_WARN = 0.001
RECENT = timedelta(days=30)


@dataclass(frozen=True)
class Rate:
    label: str  # "welcome/know-your-audience", "welcome", "broadcast #3"
    sent: int
    bounced: int
    complained: int

    def line(self) -> str:
        def pct(n: int) -> str:
            return f"{100 * n / self.sent:.2f} %" if self.sent else "-"

        return (f"  {self.label:<40} sent {self.sent:>7}  bounced {self.bounced:>5} "
                f"({pct(self.bounced)})  complained {self.complained:>5} ({pct(self.complained)})")  # fmt: skip


@dataclass(frozen=True)
class Deliverability:
    rates: list[Rate]
    recent_sent: int
    recent_complaints: int

    @property
    def warning(self) -> str | None:
        if not self.recent_sent or self.recent_complaints / self.recent_sent <= COMPLAINT_WARN:
            return None
        rate = 100 * self.recent_complaints / self.recent_sent
        return (f"warning: the complaint rate of the last 30 days is {rate:.2f} % "
                f"({self.recent_complaints} of {self.recent_sent}); Gmail wants it under 0.1 % "
                "and throttles at 0.3 %")  # fmt: skip


def _per(
    session: Session, *keys: Any, where: ColumnElement[bool]
) -> dict[tuple[object, ...], list[int]]:
    """sent, bounced and complained emails grouped by `keys` (distinct emails)."""
    found: dict[tuple[object, ...], list[int]] = {}
    sent = select(*keys, func.count()).where(Delivery.sent_at.is_not(None))
    for row in session.execute(sent.where(where).group_by(*keys)):
        found.setdefault(tuple(row[:-1]), [0, 0, 0])[0] = row[-1]
    for i, kind in ((1, "bounced"), (2, "complained")):
        q = (select(*keys, func.count(func.distinct(Event.delivery_id)))
             .join(Delivery, Delivery.id == Event.delivery_id).where(Event.kind == kind))  # fmt: skip
        for row in session.execute(q.where(where).group_by(*keys)):
            found.setdefault(tuple(row[:-1]), [0, 0, 0])[i] = row[-1]
    return found


def deliverability(session: Session, now: datetime, sequence: str | None = None) -> Deliverability:
    seq_only = Delivery.kind == DeliveryKind.SEQUENCE
    if sequence:
        seq_only = seq_only & (Delivery.sequence == sequence)
    rates = [Rate(f"{s}/{step}", *n) for (s, step), n in
             sorted(_per(session, Delivery.sequence, Delivery.step_id, where=seq_only).items())]  # fmt: skip
    rates += [Rate(f"{s} (sequence)", *n) for (s,), n in
              sorted(_per(session, Delivery.sequence, where=seq_only).items())]  # fmt: skip
    if not sequence:
        casts = Delivery.kind == DeliveryKind.BROADCAST
        rates += [Rate(f"broadcast #{b}", *n) for (b,), n in
                  sorted(_per(session, Delivery.broadcast_id, where=casts).items())]  # fmt: skip
    since = now - RECENT
    recent_sent = session.scalar(
        select(func.count()).where(Delivery.sent_at > since, Delivery.is_test.is_(False))
    )
    recent_complaints = session.scalar(
        select(func.count()).where(Event.kind == "complained", Event.at > since)
    )
    return Deliverability(rates, recent_sent or 0, recent_complaints or 0)
