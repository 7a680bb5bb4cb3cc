"""Bounce and complaint rates of the last 30 days, against what Gmail tolerates."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from nurture import clock
from nurture.doctor.report import Check, failed, passed, warned
from nurture.errors import NurtureError
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event

NAME = "bounces and complaints"
WINDOW = timedelta(days=30)
#: Gmail: keep spam complaints under 0.1 %, never reach 0.3 %.
COMPLAINT_WARN, COMPLAINT_FAIL = 0.001, 0.003
#: Past 2 % of bounces, providers start to doubt the list.
BOUNCE_WARN = 0.02


def check_rates(settings: Settings) -> Check:
    """A database that cannot be read fails this check alone, not the whole doctor."""
    try:
        return _rates(settings)
    except (NurtureError, SQLAlchemyError) as e:
        return failed(NAME, f"the database cannot be read: {str(e).splitlines()[0]}",
                      "check NURTURE_DATABASE_URL (and run `nurture db upgrade`)")  # fmt: skip


def _rates(settings: Settings) -> Check:
    name = NAME
    since = clock.now() - WINDOW
    with session_scope(settings) as session:
        sent = session.scalar(select(func.count()).where(Delivery.sent_at >= since)) or 0
        rows = session.execute(
            select(Event.kind, func.count()).where(
                Event.at >= since, Event.kind.in_(("bounced", "complained"))
            ).group_by(Event.kind)
        ).all()  # fmt: skip
    counts = {kind: n for kind, n in rows}
    if not sent:
        return passed(name, "nothing sent in the last 30 days")
    bounces, complaints = counts.get("bounced", 0) / sent, counts.get("complained", 0) / sent
    detail = f"{sent} sent in 30 days: {bounces:.2%} bounced, {complaints:.2%} complained"
    if complaints >= COMPLAINT_FAIL:
        return failed(name, detail, "Gmail rejects senders at 0.3 % complaints: send only to "
                      "people who asked, and make unsubscribing easy")  # fmt: skip
    if complaints > COMPLAINT_WARN or bounces > BOUNCE_WARN:
        return warned(name, detail, "keep complaints under 0.1 % and bounces under 2 %: "
                      "clean the list, check how signups are confirmed")  # fmt: skip
    return passed(name, detail)
