"""One outcome for every way a bounce or complaint arrives: handled once (by its key),
matched to one delivery and subscriber, recorded on the timeline, and the policy
applied: a hard bounce or a complaint suppresses at once, soft bounces after
`soft_bounce_count` within `soft_bounce_window`; whatever is queued is cancelled."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nurture import clock
from nurture.delivery.bounces.reading import Notice, read_message
from nurture.delivery.verp import deliveries_named
from nurture.people.events import record
from nurture.people.subscribers import ConsentInfo, bounce, suppress, unsubscribe
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.sql import insert_ignoring_conflicts
from nurture.store.tables import BounceMessage, Delivery, Event, Subscriber, SubscriberStatus


@dataclass(frozen=True)
class Handled:
    """What became of one report, for the command or webhook that passed it on."""

    #: "hard bounce" | "soft bounce" | "complaint" | "unmatched" | "duplicate" | "not a bounce"
    outcome: str
    delivery_id: int | None = None
    suppressed: bool = False


@dataclass
class Tally:
    """How many reports came to each outcome: the one line a command or webhook says."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, handled: Handled) -> None:
        self.outcomes[handled.outcome] = self.outcomes.get(handled.outcome, 0) + 1

    def __str__(self) -> str:
        return ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))


def handle_message(settings: Settings, raw: bytes) -> Handled:
    """Read and handle one bounce or complaint message (UnreadableMessage if it is none)."""
    notice = read_message(raw)
    if notice is None:
        return Handled("not a bounce")
    return handle_notice(settings, notice)


def handle_notice(settings: Settings, notice: Notice, *, by_address: bool = False) -> Handled:
    """Apply one notice in one transaction. `by_address`: a verified provider webhook,
    whose recipient address alone may name the subscriber (their latest sent email)."""
    now = clock.now()
    with session_scope(settings) as session:
        stmt = insert_ignoring_conflicts(session, BounceMessage, ["key"])
        stmt = stmt.values(key=notice.key[:200], at=now, outcome="handling")
        claim = session.scalar(stmt.returning(BounceMessage.id))
        if claim is None:  # another host, or an earlier call, has it
            return Handled("duplicate")
        delivery = _match(session, settings, notice, by_address)
        sub = session.get(Subscriber, delivery.subscriber_id) if delivery else None
        if delivery is None or sub is None or not _addressed_to(notice, sub, by_address):
            result = Handled("unmatched")
        else:
            result = _apply(session, settings, notice, delivery, sub, now)
        session.execute(
            update(BounceMessage).where(BounceMessage.id == claim).values(outcome=result.outcome)
        )
        return result


def _addressed_to(notice: Notice, sub: Subscriber, by_address: bool) -> bool:
    """Whether a provider's notice names the reader the matched email went to. A provider
    always says the recipient; a Message-ID or VERP address of another reader's email
    beside it must not suppress that other reader."""
    if not by_address:
        return True
    return bool(notice.addresses) and notice.addresses[0].strip().lower() == sub.email.lower()


def _match(
    session: Session, settings: Settings, notice: Notice, by_address: bool
) -> Delivery | None:
    for delivery_id in deliveries_named(settings, notice.text):
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None:
            return delivery
    if notice.message_ids:
        found = session.scalar(
            select(Delivery).where(Delivery.message_id.in_(notice.message_ids[:20])).limit(1)
        )
        if found is not None:
            return found
    if by_address and notice.addresses:
        return session.scalar(
            select(Delivery)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == notice.addresses[0].lower(), Delivery.sent_at.is_not(None))
            .order_by(Delivery.sent_at.desc(), Delivery.id.desc())
            .limit(1)
        )
    return None


def _apply(
    session: Session, settings: Settings, notice: Notice, delivery: Delivery,
    sub: Subscriber, now: datetime,
) -> Handled:  # fmt: skip
    kind = "complained" if notice.kind == "complained" else "bounced"
    data = {"reason": notice.reason, "provider": notice.provider}
    if kind == "bounced":
        data["type"] = "hard" if notice.hard else "soft"
    record(session, sub.id, kind, now, delivery_id=delivery.id, data=data, settings=settings)
    if kind == "complained":
        unsubscribe(session, sub, now, consent=ConsentInfo(source="complaint", wording=None))
        suppress(session, sub.email, f"complained ({notice.provider or 'feedback loop'})", now)
        return Handled("complaint", delivery.id, suppressed=True)
    if notice.hard:
        _suppress_bounced(session, sub, now, notice.reason or "hard bounce")
        return Handled("hard bounce", delivery.id, suppressed=True)
    since = now - settings.soft_bounce_window
    count = session.scalar(
        select(func.count()).where(
            Event.subscriber_id == sub.id, Event.kind == "bounced", Event.at > since
        )  # fmt: skip
    )
    if (count or 0) >= settings.soft_bounce_count:
        days = settings.soft_bounce_window.days
        _suppress_bounced(session, sub, now, f"{count} soft bounces in {days} days")
        return Handled("soft bounce", delivery.id, suppressed=True)
    return Handled("soft bounce", delivery.id)


def _suppress_bounced(session: Session, sub: Subscriber, now: datetime, reason: str) -> None:
    if sub.status == SubscriberStatus.BOUNCED:
        suppress(session, sub.email, reason[:200], now)  # suppressed already, kept so
        return
    bounce(session, sub, now, reason[:200])
