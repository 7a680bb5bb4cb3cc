"""The preference centre behind every unsubscribe link, when topics are on: what it
shows a reader and what their choice changes, each in a transaction of its own.

It acts, like every link, only on the person the link was sent to (links.holder).
The choices: keep the topics ticked and leave the others, leave the topic of the email
the link came in, pause everything for some days, end a pause, or (links.leave) leave
everything. The reader's reason, when given, is kept with the event that records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, catalog_for
from nurture.content.topics import Topics, topic_of, topics_for
from nurture.errors import SubscriberError
from nurture.people.events import last_sent_delivery, record
from nurture.people.links import Holder, holder, leave
from nurture.people.preferences import (
    PAUSE_DAYS,
    PREFERENCES_EVENT,
    Reason,
    join_topics,
    leave_topics,
    left_topics,
    pause,
    resume,
)
from nurture.people.subscribers import ConsentInfo, get
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber
from nurture.tokens import Claim

#: What the form may ask for (leaving everything is `links.leave`).
ACTIONS = ("save", "leave-topic", "pause", "resume")


@dataclass(frozen=True)
class TopicLine:
    name: str
    label: str
    on: bool


@dataclass(frozen=True)
class Centre:
    """What the page shows: the person, each declared topic ticked or not, a pause."""

    holder: Holder
    topics: list[TopicLine]
    paused_until: datetime | None
    #: The topic of the email the link came in, when it is a declared one.
    own: TopicLine | None


@dataclass(frozen=True)
class Choice:
    """What the form asked for: an ACTIONS item, the topics ticked (save), the days of a
    pause, and why."""

    action: str
    ticked: tuple[str, ...] = ()
    days: int = 0
    reason: Reason = field(default_factory=Reason)


@dataclass(frozen=True)
class Done:
    """What a choice changed, for the page to say."""

    left: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    paused_until: datetime | None = None
    resumed: bool = False
    #: Nothing was left ticked: they left everything.
    everything: bool = False


def own_topic(claim: Claim, catalog: Catalog) -> str | None:
    """The topic of the email a link came in: signed into it, else its sequence's."""
    if claim.topic is not None:
        return claim.topic
    seq = catalog.get(claim.sequence or "")
    return topic_of(seq) if seq else None


def _centre(session: Session, sub: Subscriber, topics: Topics, own: str | None) -> Centre:
    left = left_topics(session, sub.id)
    lines = [TopicLine(n, label, n not in left) for n, label in topics.labels.items()]
    paused = sub.paused_until
    return Centre(Holder.of(sub), lines, paused, next((t for t in lines if t.name == own), None))


def centre_by_link(settings: Settings, claim: Claim) -> Centre | None:
    """What the page shows (a GET changes nothing); None for a link that finds nobody."""
    topics, catalog = topics_for(settings.workspace), catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        sub = holder(session, claim)
        return None if sub is None else _centre(session, sub, topics, own_topic(claim, catalog))


def choose_by_link(
    settings: Settings, claim: Claim, now: datetime, consent: ConsentInfo, choice: Choice
) -> tuple[Centre, Done] | None:
    """Make the reader's choice (nothing for someone who already left or bounced)."""
    topics, catalog = topics_for(settings.workspace), catalog_for(settings.sequences_dir)
    own = own_topic(claim, catalog)
    with session_scope(settings) as session:
        sub = holder(session, claim)
        if sub is None:
            return None
        done = Done()
        if not Holder.of(sub).gone:
            done = _apply(session, sub, choice, topics, catalog, own, now, consent)
            if done.everything:
                leave(session, sub, claim, now, consent, reason=choice.reason)
            elif done != Done() or choice.reason != Reason():
                _record(session, sub, done, choice.reason, now,
                        last_sent_delivery(session, sub.id, claim.sequence))  # fmt: skip
        return _centre(session, sub, topics, own), done


def choose_for_reader(
    settings: Settings, address: str, now: datetime, *, leave: Sequence[str] = (),
    pause_for: timedelta | None = None,
) -> Done:  # fmt: skip
    """An operator's change for a reader who asked in person (by phone, by letter): the
    preference centre's own path, the ledger naming the command line as its source."""
    topics, catalog = topics_for(settings.workspace), catalog_for(settings.sequences_dir)
    for name in leave:
        if (why := topics.unknown(name)) is not None:
            raise SubscriberError(f"{why}; see docs/topics.md")
    with session_scope(settings) as session:
        sub = get(session, address)
        if Holder.of(sub).gone:
            raise SubscriberError(f"{sub.email} is {sub.status}: no email reaches them already")
        consent = ConsentInfo(source="cli", wording=None)
        done = Done(left=leave_topics(session, sub, leave, catalog, now, consent))
        if pause_for is not None:
            pause(sub, now + pause_for)
            done = replace(done, paused_until=now + pause_for)
        if done != Done():
            _record(session, sub, done, Reason(), now, None)  # asked in person, of no email
        return done


def sequence_topic(settings: Settings, sequence: str) -> str | None:
    """The declared topic a sequence belongs to, when topics are on."""
    topics, seq = topics_for(settings.workspace), catalog_for(settings.sequences_dir).get(sequence)
    return topic_of(seq) if seq is not None and topic_of(seq) in topics.labels else None


def _record(
    session: Session, sub: Subscriber, done: Done, reason: Reason, now: datetime,
    delivery_id: int | None,
) -> None:  # fmt: skip
    """The event on the reader's timeline that says what they changed, and why."""
    data = {"left": done.left, "joined": done.joined, "resumed": done.resumed,
            "paused_until": done.paused_until and done.paused_until.isoformat(),
            **reason.data()}  # fmt: skip
    record(session, sub.id, PREFERENCES_EVENT, now, data=data, delivery_id=delivery_id)


def _apply(
    session: Session, sub: Subscriber, choice: Choice, topics: Topics, catalog: Catalog,
    own: str | None, now: datetime, consent: ConsentInfo,
) -> Done:  # fmt: skip
    if choice.action == "save":
        ticked = [t for t in topics.labels if t in choice.ticked]
        if not ticked:
            return Done(everything=True)
        gone = [t for t in topics.labels if t not in ticked]
        return Done(left=leave_topics(session, sub, gone, catalog, now, consent),
                    joined=join_topics(session, sub, ticked, now, consent))  # fmt: skip
    if choice.action == "leave-topic" and own in topics.labels:
        return Done(left=leave_topics(session, sub, [own or ""], catalog, now, consent))
    if choice.action == "pause" and choice.days in PAUSE_DAYS:
        until = now + timedelta(days=choice.days)
        pause(sub, until)
        return Done(paused_until=until)
    if choice.action == "resume" and sub.paused_until is not None:
        resume(session, sub, now)
        return Done(resumed=True)
    return Done()
