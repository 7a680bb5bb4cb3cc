"""The tables of the `[sunset]` policy: a ledger of its rounds, and when it last looked for
the newly inactive (`last_runs`, which other periodic work may share)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from nurture.store.base import Base, UTCDateTime, utcnow
from nurture.store.enums import SunsetOutcome


class Sunset(Base):
    """One round of the `[sunset]` policy for one subscriber: found inactive at
    `started_at`, sent the win-back (`enrollment_id`), and how it ended. The ledger
    `stats` counts, and what keeps a stopped subscriber out of broadcasts."""

    __tablename__ = "sunsets"
    __table_args__ = (Index("ix_sunsets_subscriber_outcome", "subscriber_id", "outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    #: The win-back round they were enrolled in; None without a `winback` sequence.
    #: Indexed: deleting an enrolment looks its rounds up (ON DELETE SET NULL).
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL"), index=True
    )
    outcome: Mapped[str] = mapped_column(String(16), default=SunsetOutcome.WINBACK)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the outcome was decided (won back, unsubscribed, stopped, left).
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LastRun(Base):
    """When a periodic piece of work last ran, by name (shared by every host), for work
    `send-due` does less often than it runs: looking for newly inactive subscribers."""

    __tablename__ = "last_runs"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
