"""A broadcast's life: saved as a draft (for test copies), scheduled, cancelled.

    draft --send--> scheduled --send_at--> sending --all settled--> sent
                        \\________________________\\--cancel--> cancelled

The row keeps a snapshot of the issue as it was scheduled, so editing the file later
changes nothing that is already on its way.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from nurture.broadcast.source import Issue
from nurture.content.experiments import DEFAULT_PICK_AFTER, DEFAULT_PICK_BY, IssueExperiment
from nurture.content.topics import BROADCAST_TOPIC
from nurture.delivery.issues import web_url as web_url  # where the archive links
from nurture.errors import NurtureError
from nurture.settings import Settings
from nurture.store.tables import TO_SEND, Broadcast, BroadcastState, Delivery, DeliveryStatus

#: The first wall clock to reach a given time is UTC+14 (Kiribati): a `--local-time`
#: broadcast starts its fan-out then, and each email waits for its own zone's turn.
EARLIEST_ZONE = timedelta(hours=14)
#: The last one is UTC-12: after that, a `--local-time` time has passed everywhere.
LATEST_ZONE = timedelta(hours=12)
#: A time this far in the past is taken as a typo rather than "send now".
PAST_GRACE = timedelta(minutes=10)
#: States in which the same source cannot be scheduled again.
_ON_ITS_WAY = (BroadcastState.SCHEDULED, BroadcastState.SENDING, BroadcastState.SENT)


class BroadcastError(NurtureError):
    """A broadcast that cannot be scheduled, found or cancelled as asked."""


def schedule_times(
    settings: Settings, when: str | datetime | date | None, local_time: bool, now: datetime
) -> tuple[datetime, str | None]:
    """(send_at in UTC, local wall-clock time or None) for WHEN; None or "now" is now.

    A time without a zone is in NURTURE_TIMEZONE, or with `local_time` in each
    subscriber's own zone."""
    if when is None or (isinstance(when, str) and when.strip().lower() == "now"):
        if local_time:
            raise BroadcastError("--local-time needs a time, e.g. --at '2026-12-08 09:00' "
                                 "(to send now instead, add --no-local-time)")  # fmt: skip
        return now, None
    if isinstance(when, date) and not isinstance(when, datetime):
        raise BroadcastError(f"{when} has no time of day; write e.g. '{when} 09:00'")
    try:
        at = when if isinstance(when, datetime) else datetime.fromisoformat(when.strip())
    except ValueError:
        raise BroadcastError(f"{when!r} is not a time: write 'YYYY-MM-DD HH:MM' "
                             "(optionally with a zone offset, like +01:00), or 'now'") from None  # fmt: skip
    if local_time:
        if at.tzinfo is not None:
            raise BroadcastError("--local-time takes a time without a zone offset: "
                                 "it is read in each subscriber's own zone")  # fmt: skip
        earliest = at.replace(tzinfo=UTC) - EARLIEST_ZONE
        if earliest + EARLIEST_ZONE + LATEST_ZONE < now - PAST_GRACE:
            raise BroadcastError(f"{at:%Y-%m-%d %H:%M} has already passed in every time zone")
        return max(earliest, now), at.isoformat(timespec="minutes")
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(settings.timezone))
    at = at.astimezone(UTC)
    if at < now - PAST_GRACE:
        raise BroadcastError(f"{at:%Y-%m-%d %H:%M} UTC is in the past (use 'now' to send now)")
    return max(at, now), None


def _free_slug(session: Session, base: str, own_id: int | None) -> str:
    slug, n = base, 1
    while True:
        taken = session.scalar(select(Broadcast.id).where(Broadcast.slug == slug))
        if taken is None or taken == own_id:
            return slug
        n += 1
        slug = f"{base}-{n}"


def save(
    session: Session, settings: Settings, issue: Issue, now: datetime, *, schedule: bool
) -> Broadcast:
    """Write the issue as this source's draft, or schedule it. A source already
    scheduled or sent is refused, so the same issue never goes out twice by mistake."""
    if schedule:
        send_at, local_at = schedule_times(settings, issue.send_at, issue.local_time, now)
        taken = session.scalar(
            select(Broadcast).where(Broadcast.source == issue.source,
                                    Broadcast.state.in_(_ON_ITS_WAY)).limit(1)
        )  # fmt: skip
        if taken is not None:
            raise BroadcastError(
                f"{issue.source} is already {taken.state} as broadcast #{taken.id}; "
                f"cancel it first (nurture broadcast cancel {taken.id}), or copy the file "
                "to send a new issue"
            )
    row = session.scalar(
        select(Broadcast)
        .where(Broadcast.source == issue.source, Broadcast.state == BroadcastState.DRAFT)
        .order_by(Broadcast.id.desc())
        .limit(1)
    )
    # Only archived issues are listed; the web version of the others is reachable from
    # their emails alone, so their address is not guessable.
    base = issue.slug if issue.archive else f"{issue.slug}-{secrets.token_hex(4)}"
    if row is None:
        row = Broadcast(source=issue.source, created_at=now, checkpoint=0,
                        slug=_free_slug(session, base, None))  # fmt: skip
        session.add(row)
    elif row.archive != issue.archive:
        row.slug = _free_slug(session, base, row.id)
    row.subject, row.preheader, row.segment = issue.subject, issue.preheader, issue.segment
    row.body_html, row.body_text, row.archive = issue.body_html, issue.body_text, issue.archive
    row.topic = issue.topic or BROADCAST_TOPIC
    row.experiment = experiment_of(issue)
    if schedule:
        row.state, row.send_at, row.local_at = BroadcastState.SCHEDULED, send_at, local_at
        if issue.test_share is not None:
            row.pick_at = send_at + (issue.pick_after or DEFAULT_PICK_AFTER)
    session.flush()
    return row


def experiment_of(issue: Issue) -> dict[str, object] | None:
    """What a broadcast keeps of the issue's experiment (None: it has no variants)."""
    if not issue.variants:
        return None
    trial = IssueExperiment(variants=issue.variants, test_share=issue.test_share,
                            pick_by=issue.pick_by or DEFAULT_PICK_BY,
                            pick_after=issue.pick_after or DEFAULT_PICK_AFTER, goal=issue.goal)  # fmt: skip
    return trial.model_dump(mode="json")


def get(session: Session, broadcast_id: int) -> Broadcast:
    row = session.get(Broadcast, broadcast_id)
    if row is None:
        raise BroadcastError(f"no broadcast #{broadcast_id} (see: nurture broadcast list)")
    return row


def cancel(session: Session, broadcast_id: int, now: datetime) -> int:
    """Stop what is not sent yet; returns how many emails were stopped. Emails a worker
    is sending at this very moment still go."""
    row = get(session, broadcast_id)
    if row.state in (BroadcastState.SENT, BroadcastState.CANCELLED):
        raise BroadcastError(f"broadcast #{row.id} is already {row.state}")
    row.state, row.cancelled_at = BroadcastState.CANCELLED, now
    stopped = session.execute(
        update(Delivery)
        .where(
            Delivery.broadcast_id == row.id,
            Delivery.status.in_([DeliveryStatus.SCHEDULED, *TO_SEND]),
        )
        .values(status=DeliveryStatus.CANCELLED, error="broadcast cancelled")
    )
    assert isinstance(stopped, CursorResult)
    return int(stopped.rowcount or 0)
