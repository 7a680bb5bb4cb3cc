"""`nurture simulate`: the dated timeline one new subscriber would receive.

It runs the real code path (enrol, claim, render, send) against a throw-away SQLite
database and outbox with a moving clock, so what it shows is what would happen, and
no data of the workspace is touched.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from nurture import clock
from nurture.db import dispose, session_scope
from nurture.errors import NurtureError
from nurture.models import Delivery, Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus
from nurture.scheduling import enroll
from nurture.send_due import run_send_due
from nurture.sequences import catalog_for
from nurture.settings import Settings


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    local: datetime
    step_id: str
    stage: str
    subject: str
    status: str
    note: str


def simulate(settings: Settings, name: str, days: int, timezone: str | None) -> list[TimelineRow]:
    seq = catalog_for(settings.sequences_dir).get(name)
    if seq is None:
        known = ", ".join(sorted(catalog_for(settings.sequences_dir).sequences)) or "none"
        raise NurtureError(f"no sequence named {name!r} (known: {known})")
    zone = ZoneInfo(timezone or settings.timezone)
    with tempfile.TemporaryDirectory(prefix="nurture-simulate-") as tmp:
        sim = replace(
            settings, database_url=f"sqlite:///{tmp}/simulate.db", redis_url=None,
            smtp_url=None, outbox_dir=Path(tmp) / "outbox",
            sender=settings.sender or "Preview <preview@example.com>",
        )  # fmt: skip
        try:
            return _run(sim, seq.name, days, zone)
        finally:
            dispose(sim.database_url)


def _run(sim: Settings, name: str, days: int, zone: ZoneInfo) -> list[TimelineRow]:
    start = clock.now().replace(second=0, microsecond=0)
    end = start + timedelta(days=days)
    seq = catalog_for(sim.sequences_dir).sequences[name]
    with clock.frozen_at(start):
        with session_scope(sim) as session:
            sub = Subscriber(email="new.subscriber@example.com", first_name="Sam",
                             timezone=zone.key, status=SubscriberStatus.ACTIVE, attributes={})  # fmt: skip
            session.add(sub)
            session.flush()
            enroll(session, sub.id, seq, start)
        while True:
            with session_scope(sim) as session:
                due = session.scalar(
                    select(func.min(Enrollment.next_due_at)).where(
                        Enrollment.status == EnrollmentStatus.ACTIVE
                    )
                )
            if due is None or due > end:
                break
            clock.set_frozen(max(due, clock.now()))
            run_send_due(sim)
        with session_scope(sim) as session:
            deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
    rows = []
    for d in deliveries:
        step = seq.step(d.step_id or "")
        at = d.sent_at or d.created_at
        rows.append(
            TimelineRow(
                at=at, local=at.astimezone(zone), step_id=d.step_id or "",
                stage=str(step.stage) if step else "", subject=d.subject or "",
                status=str(d.status), note=d.error or "",
            )
        )  # fmt: skip
    return rows
