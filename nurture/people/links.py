"""What a confirm, unsubscribe or resubscribe link does, each in a transaction of its own.

A link acts only on the person it was sent to (`tokens.Claim.holds_for`): once they are
forgotten, or subscribed again since (a new link key), an old link finds nobody and
every function here answers None. Pages show only what `Holder` carries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, catalog_for
from nurture.people.enrolment import enroll
from nurture.people.events import last_sent_delivery, record
from nurture.people.preferences import Reason, apply_signup_choice, remembered_choice
from nurture.people.subscribers import (
    SIGNUP_SEQUENCE,
    ConsentInfo,
    confirm,
    resubscribe,
    unsubscribe,
)
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber, SubscriberStatus
from nurture.tokens import Claim


@dataclass(frozen=True)
class Holder:
    """The person a link was sent to, as its pages show them."""

    email: str
    first_name: str | None
    status: SubscriberStatus

    @classmethod
    def of(cls, sub: Subscriber) -> Holder:
        return cls(sub.email, sub.first_name, SubscriberStatus(sub.status))

    @property
    def pending(self) -> bool:
        return self.status == SubscriberStatus.PENDING

    @property
    def active(self) -> bool:
        return self.status == SubscriberStatus.ACTIVE

    @property
    def unsubscribed(self) -> bool:
        return self.status == SubscriberStatus.UNSUBSCRIBED

    @property
    def bounced(self) -> bool:
        return self.status == SubscriberStatus.BOUNCED

    @property
    def gone(self) -> bool:
        """Nothing more is sent to them: they left, or their address bounced."""
        return self.unsubscribed or self.bounced


def holder(session: Session, claim: Claim) -> Subscriber | None:
    """The subscriber a confirm or unsubscribe link was sent to, or None when that
    person is gone, or subscribed again since (a new link key), or the id is someone
    else's now: an old link must act on nobody."""
    sub = session.get(Subscriber, claim.subscriber_id)
    return sub if sub is not None and claim.holds_for(sub) else None


def link_holder(settings: Settings, claim: Claim) -> Holder | None:
    """Who the link is for, for a page that only asks (a GET changes nothing)."""
    with session_scope(settings) as session:
        sub = holder(session, claim)
        return None if sub is None else Holder.of(sub)


def confirm_by_link(
    settings: Settings, claim: Claim, now: datetime, consent: ConsentInfo
) -> Holder | None:
    """Confirm a pending subscriber and enrol them. Returns them as they were before:
    `pending` means this call confirmed them; any other status, that it did nothing."""
    with session_scope(settings) as session:
        sub = holder(session, claim)
        if sub is None:
            return None
        before = Holder.of(sub)
        if before.pending:
            confirm_signup(session, catalog_for(settings.sequences_dir), sub, now, consent)
        return before


def confirm_signup(
    session: Session, catalog: Catalog, sub: Subscriber, now: datetime, consent: ConsentInfo
) -> list[str]:
    """Confirm, with the signup's topic choice (recorded with the consent), and also enrol
    in the sequence the signup form asked for, if any."""
    was_pending = sub.status == SubscriberStatus.PENDING
    if was_pending:
        consent = replace(consent, topics=tuple(remembered_choice(sub.attributes)[0]))
        apply_signup_choice(session, sub, now)
    names = confirm(session, catalog, sub, now, consent)
    wanted = catalog.get(str((sub.attributes or {}).get(SIGNUP_SEQUENCE) or ""))
    if was_pending and wanted is not None and enroll(session, sub.id, wanted, now):
        names.append(wanted.name)
    return names


def unsubscribe_by_link(
    settings: Settings, claim: Claim, now: datetime, consent: ConsentInfo, *,
    only: str | None, one_click: bool, reason: Reason | None = None,
) -> Holder | None:  # fmt: skip
    """Leave sequence `only`, or everything when None, and record the unsubscribe (with
    the reader's reason, if given) against the email they most likely acted on. Returns
    them as they are after; someone who had already left or bounced is left as they were."""
    with session_scope(settings) as session:
        sub = holder(session, claim)
        if sub is None:
            return None
        leave(session, sub, claim, now, consent, only=only, one_click=one_click, reason=reason)
        return Holder.of(sub)


def leave(
    session: Session, sub: Subscriber, claim: Claim, now: datetime, consent: ConsentInfo, *,
    only: str | None = None, one_click: bool = False, reason: Reason | None = None,
) -> None:  # fmt: skip
    """`unsubscribe_by_link`'s change, in the caller's transaction."""
    if Holder.of(sub).gone:
        return
    unsubscribe(session, sub, now, sequence=only, consent=consent)
    data = {"sequence": only, "one_click": one_click, **(reason.data() if reason else {})}
    record(session, sub.id, "unsubscribe", now,
           delivery_id=last_sent_delivery(session, sub.id, claim.sequence), data=data)  # fmt: skip


def resubscribe_by_link(
    settings: Settings, claim: Claim, now: datetime, consent: ConsentInfo
) -> tuple[Holder, int | None] | None:
    """Start a fresh double opt-in for someone who left. Returns them as they were before,
    and the confirmation delivery to send, if one is due (at most one an hour)."""
    with session_scope(settings) as session:
        sub = holder(session, claim)
        if sub is None:
            return None
        before = Holder.of(sub)
        return before, resubscribe(session, sub, now, consent)
