"""Read-only reports: what each step did."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.models import Delivery, DeliveryStatus
from nurture.sequences import Catalog


@dataclass(frozen=True)
class StepStats:
    sequence: str
    step_id: str
    stage: str
    counts: dict[str, int]


COLUMNS = ("sent", "pending", "failed", "skipped", "cancelled")
_PENDING = {DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRY}


def step_stats(session: Session, catalog: Catalog, sequence: str | None = None) -> list[StepStats]:
    query = (
        select(Delivery.sequence, Delivery.step_id, Delivery.status, func.count())
        .where(Delivery.kind == "sequence")
        .group_by(Delivery.sequence, Delivery.step_id, Delivery.status)
    )
    if sequence:
        query = query.where(Delivery.sequence == sequence)
    found: dict[tuple[str, str], dict[str, int]] = {}
    for seq_name, step_id, status, count in session.execute(query):
        column = "pending" if status in _PENDING else str(status)
        bucket = found.setdefault((seq_name, step_id), dict.fromkeys(COLUMNS, 0))
        bucket[column] = bucket.get(column, 0) + count
    rows = []
    names = [sequence] if sequence else sorted(catalog.sequences)
    for name in names:
        seq = catalog.get(name)
        for step in seq.steps if seq else ():
            counts = found.pop((name, step.id), dict.fromkeys(COLUMNS, 0))
            rows.append(StepStats(name, step.id, str(step.stage), counts))
    for (name, step_id), counts in sorted(found.items()):  # steps since removed from files
        rows.append(StepStats(name, step_id, "(removed)", counts))
    return rows


@dataclass(frozen=True)
class DeliveryHealth:
    """Where the queue stands: what waits, what is on the wire, what went wrong in transit."""

    queued: int
    sending: int
    retry: int
    #: `sending` for longer than resend_after: its worker stopped; send-due will resend it.
    stuck: int
    #: Ever taken back from a stopped worker and sent again (possibly a duplicate).
    recovered: int

    def line(self) -> str:
        return (f"deliveries: {self.queued} queued, {self.sending} sending, {self.retry} to retry, "
                f"{self.stuck} stuck, {self.recovered} recovered")  # fmt: skip


def delivery_health(session: Session, now: datetime, resend_after: timedelta) -> DeliveryHealth:
    by_status = dict(
        session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
    )
    stuck = session.scalar(
        select(func.count()).where(
            Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < now - resend_after
        )
    )
    recovered = session.scalar(select(func.count()).where(Delivery.recovered_at.is_not(None)))
    return DeliveryHealth(
        queued=by_status.get(DeliveryStatus.QUEUED, 0),
        sending=by_status.get(DeliveryStatus.SENDING, 0),
        retry=by_status.get(DeliveryStatus.RETRY, 0),
        stuck=stuck or 0,
        recovered=recovered or 0,
    )
