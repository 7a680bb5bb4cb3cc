"""Subscriber state changes: add, confirm, unsubscribe, forget. Nothing here sends email;
a confirmation is a queued delivery like any other."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nurture.errors import SubscriberError
from nurture.models import (
    Consent,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Tag,
    new_link_key,
)
from nurture.scheduling import enroll, enroll_triggered
from nurture.sequences import Catalog
from nurture.sql import insert_ignoring_conflicts

#: What a person agrees to on the default form; stored with each consent.
DEFAULT_WORDING = "Send me emails from this list. I can unsubscribe at any time."
FIRST_NAME_MAX = 100
#: However often an address is typed into a form, it gets at most one confirmation
#: email per this long.
CONFIRMATION_RESEND_AFTER = timedelta(hours=1)
#: Attribute that remembers which sequence a signup form asked for, until confirmation.
SIGNUP_SEQUENCE = "signup_sequence"


def normalize_email(raw: str) -> str:
    """The canonical address, or SubscriberError saying why it is not one."""
    try:
        result = validate_email((raw or "").strip(), check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{raw!r} is not a valid email address: {e}") from None
    return result.normalized.lower()


def check_timezone(tz: str | None) -> str | None:
    if not tz:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
        raise SubscriberError(f"{tz!r} is not an IANA time zone (like Europe/Paris)") from None
    return tz


def clean_first_name(name: str | None) -> str | None:
    name = " ".join((name or "").split())[:FIRST_NAME_MAX]
    return name or None


def email_hash(address: str) -> str:
    return hashlib.sha256(address.lower().encode()).hexdigest()


def is_suppressed(session: Session, address: str) -> bool:
    return (
        session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(address)))
        is not None
    )


def suppress(session: Session, address: str, reason: str, now: datetime) -> None:
    stmt = insert_ignoring_conflicts(session, Suppression, ["email_hash"])
    session.execute(stmt.values(email_hash=email_hash(address), reason=reason, at=now))


@dataclass(frozen=True)
class ConsentInfo:
    source: str = "cli"
    ip: str | None = None
    user_agent: str | None = None
    form: str | None = None
    wording: str | None = DEFAULT_WORDING


def find(session: Session, address: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email == address.lower()))


def get(session: Session, address: str) -> Subscriber:
    sub = find(session, normalize_email(address))
    if sub is None:
        raise SubscriberError(f"no subscriber {address}")
    return sub


def add_tags(session: Session, subscriber_id: int, tags: list[str]) -> None:
    for tag in {t.strip().lower() for t in tags if t.strip()}:
        stmt = insert_ignoring_conflicts(session, Tag, ["subscriber_id", "name"])
        session.execute(stmt.values(subscriber_id=subscriber_id, name=tag))


def tags_of(session: Session, subscriber_id: int) -> list[str]:
    return list(session.scalars(select(Tag.name).where(Tag.subscriber_id == subscriber_id)
                                .order_by(Tag.name)))  # fmt: skip


def add(
    session: Session,
    catalog: Catalog,
    address: str,
    now: datetime,
    *,
    first_name: str | None = None,
    timezone: str | None = None,
    tags: list[str] | None = None,
    confirmed: bool = False,
    consent: ConsentInfo | None = None,
) -> tuple[Subscriber, bool]:
    """Add or find a subscriber; returns (subscriber, created).

    A new address is `pending` and gets a confirmation delivery, unless `confirmed`
    records that consent was given elsewhere: then it is `active` and enrolled at once.
    A suppressed address (bounced, forgotten) is refused without saying so to callers
    that must not reveal it: they get the subscriber back as if nothing happened.
    """
    address = normalize_email(address)
    timezone = check_timezone(timezone)
    consent = consent or ConsentInfo()
    existing = find(session, address)
    if existing is not None:
        if tags:
            add_tags(session, existing.id, tags)
        return existing, False
    if is_suppressed(session, address):
        raise SubscriberError(f"{address} is suppressed (it bounced or asked to be forgotten)")
    sub = Subscriber(
        email=address,
        first_name=clean_first_name(first_name),
        timezone=timezone,
        attributes={},
        status=SubscriberStatus.PENDING,
        source=consent.source,
        created_at=now,
    )
    session.add(sub)
    session.flush()
    add_tags(session, sub.id, tags or [])
    _record_consent(session, sub.id, "requested", now, consent)
    if confirmed:
        confirm(session, catalog, sub, now, consent)
    else:
        queue_confirmation(session, sub, now)
    return sub, True


def queue_confirmation(session: Session, sub: Subscriber, now: datetime) -> int:
    sub.confirmation_sent_at = now
    delivery = Delivery(
        subscriber_id=sub.id, kind="confirm", status=DeliveryStatus.QUEUED,
        created_at=now, enqueued_at=now,
    )  # fmt: skip
    session.add(delivery)
    session.flush()
    return delivery.id


def confirm(
    session: Session, catalog: Catalog, sub: Subscriber, now: datetime, consent: ConsentInfo
) -> list[str]:
    """Make a pending subscriber active and enrol them; idempotent for active ones."""
    if sub.status == SubscriberStatus.ACTIVE:
        return []
    if sub.status != SubscriberStatus.PENDING:
        raise SubscriberError(f"{sub.email} is {sub.status} and cannot be confirmed")
    sub.status = SubscriberStatus.ACTIVE
    sub.confirmed_at = now
    _record_consent(session, sub.id, "confirmed", now, consent)
    return enroll_triggered(session, sub.id, catalog, "signup", now)


def unsubscribe(
    session: Session, sub: Subscriber, now: datetime, *, sequence: str | None = None,
    consent: ConsentInfo | None = None,
) -> None:  # fmt: skip
    """Stop one sequence, or everything; queued deliveries die here, not at send time only."""
    reason = f"unsubscribed from {sequence}" if sequence else "unsubscribed"
    stop_sending(session, sub, now, reason, sequence)
    if sequence is None and sub.status != SubscriberStatus.UNSUBSCRIBED:
        sub.status = SubscriberStatus.UNSUBSCRIBED
        sub.unsubscribed_at = now
        _record_consent(session, sub.id, "withdrawn", now, consent or ConsentInfo())


def confirmation_allowed(
    sub: Subscriber, now: datetime, after: timedelta = CONFIRMATION_RESEND_AFTER
) -> bool:
    sent = sub.confirmation_sent_at
    return sent is None or now - sent >= after


def resubscribe(
    session: Session, sub: Subscriber, now: datetime, consent: ConsentInfo, *,
    resend_after: timedelta = CONFIRMATION_RESEND_AFTER,
) -> int | None:  # fmt: skip
    """A fresh double opt-in for someone who left; returns the confirmation to send, if any."""
    if sub.status != SubscriberStatus.UNSUBSCRIBED:
        return None
    sub.status = SubscriberStatus.PENDING
    _record_consent(session, sub.id, "requested", now, consent)
    if not confirmation_allowed(sub, now, resend_after):
        return None  # the confirmation sent within the hour, and its key, still stand
    sub.link_key = new_link_key()  # links from before they left act no more
    return queue_confirmation(session, sub, now)


def confirm_signup(
    session: Session, catalog: Catalog, sub: Subscriber, now: datetime, consent: ConsentInfo
) -> list[str]:
    """Confirm, and also enrol in the sequence the signup form asked for, if any."""
    was_pending = sub.status == SubscriberStatus.PENDING
    names = confirm(session, catalog, sub, now, consent)
    wanted = catalog.get(str((sub.attributes or {}).get(SIGNUP_SEQUENCE) or ""))
    if was_pending and wanted is not None and enroll(session, sub.id, wanted, now):
        names.append(wanted.name)
    return names


def bounce(session: Session, sub: Subscriber, now: datetime, reason: str) -> None:
    """A permanent failure: never mail this address again."""
    stop_sending(session, sub, now, f"address bounced ({reason})")
    sub.status = SubscriberStatus.BOUNCED
    suppress(session, sub.email, reason, now)


def stop_sending(
    session: Session, sub: Subscriber, now: datetime, reason: str, sequence: str | None = None
) -> None:
    ended = update(Enrollment).where(
        Enrollment.subscriber_id == sub.id, Enrollment.status == EnrollmentStatus.ACTIVE
    )
    cancelled = update(Delivery).where(
        Delivery.subscriber_id == sub.id,
        Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRY]),
    )
    if sequence is not None:
        ended = ended.where(Enrollment.sequence == sequence)
        cancelled = cancelled.where(Delivery.sequence == sequence)
    session.execute(ended.values(status=EnrollmentStatus.EXITED, next_due_at=None,
                                 ended_at=now, end_reason=reason))  # fmt: skip
    session.execute(cancelled.values(status=DeliveryStatus.CANCELLED, error=reason))


def forget(session: Session, sub: Subscriber, now: datetime) -> None:
    """Erase everything about a person (GDPR), keeping only a hash that suppresses the address."""
    suppress(session, sub.email, "forgotten on request", now)
    session.execute(delete(Subscriber).where(Subscriber.id == sub.id))


def _record_consent(
    session: Session, subscriber_id: int, action: str, now: datetime, info: ConsentInfo
) -> None:
    session.add(
        Consent(
            subscriber_id=subscriber_id, action=action, at=now, source=info.source,
            ip=info.ip, user_agent=(info.user_agent or None) and info.user_agent[:400],
            form=info.form, wording=info.wording,
        )
    )  # fmt: skip
