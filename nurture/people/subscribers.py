"""Subscriber state changes: add, confirm, unsubscribe, forget. Nothing here sends email;
a confirmation is a queued delivery like any other."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nurture.content.fields import clean_text
from nurture.content.sequences import Catalog
from nurture.errors import SubscriberError
from nurture.people.enrolment import enroll, enroll_triggered
from nurture.people.tags import clean_tags
from nurture.store.sql import insert_ignoring_conflicts
from nurture.store.tables import (
    TO_SEND,
    Consent,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Tag,
    new_link_key,
)

#: What a person agrees to on the default form; stored with each consent.
DEFAULT_WORDING = "Send me emails from this list. I can unsubscribe at any time."
FIRST_NAME_MAX = 100
#: However often an address is typed into a form, it gets at most one confirmation
#: email per this long.
CONFIRMATION_RESEND_AFTER = timedelta(hours=1)
#: Attribute that remembers which sequence a signup form asked for, until confirmation.
SIGNUP_SEQUENCE = "signup_sequence"


class UnmailableAddress(SubscriberError):
    """A well-formed address nurture cannot send to (letters outside ASCII before the @).
    The message is for operators; `VISITOR_MESSAGE` is what a public form shows."""

    VISITOR_MESSAGE = ("This address has letters we can't send to yet (like é or ü before "
                       "the @). Please use another address.")  # fmt: skip


def normalize_email(raw: str) -> str:
    """The canonical address, or SubscriberError saying why it is not one.

    The one address policy, for every path (form, JSON, CLI, import, API): nurture sends
    plain SMTP, so a local part (before the @) must be ASCII; an international domain is
    kept in its ASCII (punycode) form, which every mail server accepts.
    """
    address = (raw or "").strip()
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL.match(local):
        ascii_domain = _ascii_domain(domain)
        if ascii_domain is not None and len(local) + 1 + len(ascii_domain) <= 254:
            return f"{local}@{ascii_domain}".lower()
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        if local and not local.isascii():
            raise UnmailableAddress(
                f"{raw!r} cannot be mailed: letters outside ASCII before the @ need SMTPUTF8, "
                "which nurture does not send; use an ASCII address"
            ) from None
        raise SubscriberError(f"{raw!r} is not a valid email address: {e}") from None
    return (result.ascii_email or result.normalized).lower()


#: A plain dot-atom local part (RFC 5322 atext), the shape nearly every address has:
#: for it, only the domain needs email_validator, once per domain (a bulk import checks
#: 100,000 addresses on a few thousand domains).
_PLAIN_LOCAL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z"
)


@lru_cache(maxsize=8192)
def _ascii_domain(domain: str) -> str | None:
    """The domain's ASCII form when email_validator accepts it, else None."""
    try:
        result = validate_email(f"x@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return str(result.ascii_domain)


def check_timezone(tz: str | None) -> str | None:
    if not tz:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
        raise SubscriberError(f"{tz!r} is not an IANA time zone (like Europe/Paris)") from None
    return tz


def clean_first_name(name: str | None) -> str | None:
    """A first name as every path stores it: one line, no control characters."""
    return clean_text(name or "", FIRST_NAME_MAX) or None


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
    #: The topics this consent is about; none: the whole subscription.
    topics: tuple[str, ...] = ()


def find(session: Session, address: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email == address.lower()))


def get(session: Session, address: str) -> Subscriber:
    sub = find(session, normalize_email(address))
    if sub is None:
        raise SubscriberError(f"no subscriber {address}")
    return sub


def add_tags(session: Session, subscriber_id: int, tags: Iterable[str]) -> list[str]:
    """Add tags (checked by clean_tags); returns the ones the subscriber did not have."""
    names = clean_tags(tags)
    stmt = insert_ignoring_conflicts(session, Tag, ["subscriber_id", "name"])
    # RETURNING, not rowcount: a row left out by ON CONFLICT must read as "had it".
    return [
        name
        for name in names
        if session.execute(
            stmt.values(subscriber_id=subscriber_id, name=name).returning(Tag.id)
        ).first()
        is not None
    ]


def enroll_tagged(
    session: Session, catalog: Catalog, sub: Subscriber, tags: Iterable[str], now: datetime,
    *, again: bool = True,
) -> list[str]:  # fmt: skip
    """Start the `trigger: tag:<name>` sequences of these (newly added) tags, for an
    active subscriber. Every path a tag arrives by calls this, so each enrols the same
    way, once. `again=False`: first rounds only, for tags held from before."""
    if sub.status != SubscriberStatus.ACTIVE:
        return []
    return [seq.name for tag in tags for seq in catalog.triggered_by(f"tag:{tag}")
            if enroll(session, sub.id, seq, now, again=again)]  # fmt: skip


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
    attributes: dict[str, str | None] | None = None,
) -> tuple[Subscriber, bool]:
    """Add or find a subscriber; returns (subscriber, created).

    A new address is `pending` and gets a confirmation delivery, unless `confirmed`
    records that consent was given elsewhere: then it is `active` and enrolled at once.
    A suppressed address (bounced, forgotten) is refused without saying so to callers
    that must not reveal it: they get the subscriber back as if nothing happened.
    `attributes` are checked values (fields.Fields.values); a known subscriber gets its
    new tags (and their `tag:` sequences) and these attributes, nothing else.
    """
    address = normalize_email(address)
    timezone = check_timezone(timezone)
    names = clean_tags(tags or [])
    consent = consent or ConsentInfo()
    existing = find(session, address)
    if existing is not None:
        if attributes:
            set_attributes(existing, attributes)
        enroll_tagged(session, catalog, existing, add_tags(session, existing.id, names), now)
        return existing, False
    if is_suppressed(session, address):
        raise SubscriberError(f"{address} is suppressed (it bounced, complained, asked to be "
                              "forgotten or was added to the suppression list)")  # fmt: skip
    sub = Subscriber(
        email=address,
        first_name=clean_first_name(first_name),
        timezone=timezone,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        status=SubscriberStatus.PENDING,
        source=consent.source,
        created_at=now,
    )
    session.add(sub)
    session.flush()
    add_tags(session, sub.id, names)
    record_consent(session, sub.id, "requested", now, consent)
    if confirmed:
        confirm(session, catalog, sub, now, consent)
    else:
        queue_confirmation(session, sub, now)
    return sub, True


def set_attributes(sub: Subscriber, values: dict[str, str | None]) -> None:
    """Merge checked values into a subscriber's attributes; None removes one."""
    merged = dict(sub.attributes or {})
    for name, value in values.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    sub.attributes = merged  # a new dict, so the JSON column is written


def queue_confirmation(session: Session, sub: Subscriber, now: datetime) -> int:
    sub.confirmation_sent_at = now
    delivery = Delivery(
        subscriber_id=sub.id, kind=DeliveryKind.CONFIRM, status=DeliveryStatus.QUEUED,
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
    sub.paused_until = None  # a pause belonged to the subscription they left
    record_consent(session, sub.id, "confirmed", now, consent)
    names = enroll_triggered(session, sub.id, catalog, "signup", now)
    # Tags held while pending start their sequences now; one held from an earlier
    # subscription is no new trigger, so it starts no new round of a `reentry` sequence.
    held = tags_of(session, sub.id)
    return names + enroll_tagged(session, catalog, sub, held, now, again=False)


def unsubscribe(
    session: Session, sub: Subscriber, now: datetime, *, sequence: str | None = None,
    consent: ConsentInfo | None = None,
) -> None:  # fmt: skip
    """Stop one sequence, or everything (which also ends a pause); queued deliveries die
    here, not at send time only."""
    reason = f"unsubscribed from {sequence}" if sequence else "unsubscribed"
    stop_sending(session, sub, now, reason, sequence)
    if sequence is None and sub.status != SubscriberStatus.UNSUBSCRIBED:
        sub.status = SubscriberStatus.UNSUBSCRIBED
        sub.unsubscribed_at = now
        sub.paused_until = None  # nothing left to hold: a pause would outlive their leaving
        record_consent(session, sub.id, "withdrawn", now, consent or ConsentInfo())


def confirmation_allowed(
    sub: Subscriber, now: datetime, after: timedelta = CONFIRMATION_RESEND_AFTER
) -> bool:
    sent = sub.confirmation_sent_at
    return sent is None or now - sent >= after


def resubscribe(
    session: Session, sub: Subscriber, now: datetime, consent: ConsentInfo, *,
    resend_after: timedelta = CONFIRMATION_RESEND_AFTER,
) -> int | None:  # fmt: skip
    """A fresh double opt-in for someone who left; returns the confirmation to send, if any.

    One conditional UPDATE makes the change, so of several requests at once (a double
    click, a retried POST) exactly one finds them still unsubscribed with the key it
    read, rotates the key and queues a confirmation; the rest change nothing and
    return None, as for a confirmation already requested. Two rotations would leave
    the first email's link dead.
    """
    if sub.status != SubscriberStatus.UNSUBSCRIBED:
        return None
    allowed = confirmation_allowed(sub, now, resend_after)
    values: dict[str, object] = {"status": SubscriberStatus.PENDING}
    if allowed:  # else the confirmation sent within the hour, and its key, still stand
        values |= {"link_key": new_link_key(), "confirmation_sent_at": now}
    won = session.execute(
        update(Subscriber)
        .where(Subscriber.id == sub.id, Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
               Subscriber.link_key == sub.link_key)
        .values(**values)
        .returning(Subscriber.id)
        .execution_options(synchronize_session=False)
    ).first()  # fmt: skip
    session.refresh(sub)
    if won is None:
        return None
    record_consent(session, sub.id, "requested", now, consent)
    return queue_confirmation(session, sub, now) if allowed else None


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
        Delivery.status.in_(TO_SEND),
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


def record_consent(
    session: Session, subscriber_id: int, action: str, now: datetime, info: ConsentInfo
) -> None:
    session.add(
        Consent(
            subscriber_id=subscriber_id, action=action, at=now, source=info.source,
            ip=info.ip, user_agent=(info.user_agent or None) and info.user_agent[:400],
            form=info.form, wording=info.wording, topics=" ".join(info.topics) or None,
        )
    )  # fmt: skip


def remove_tags(session: Session, subscriber_id: int, tags: Iterable[str]) -> None:
    """Remove tags, named in any case; a tag the subscriber does not have is ignored."""
    names = [t.strip().lower() for t in tags]
    session.execute(delete(Tag).where(Tag.subscriber_id == subscriber_id, Tag.name.in_(names)))


def queued_confirmations(session: Session, subscriber_id: int) -> list[int]:
    """The confirmation emails of one subscriber still waiting to be sent."""
    return list(session.scalars(
        select(Delivery.id).where(Delivery.subscriber_id == subscriber_id,
                                  Delivery.kind == "confirm",
                                  Delivery.status == DeliveryStatus.QUEUED)
    ))  # fmt: skip
