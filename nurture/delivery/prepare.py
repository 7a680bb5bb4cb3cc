"""Re-check and compose a group of claimed deliveries, reading what they need in a few
queries for the whole group: whether each may still go out (subscriber, suppression,
enrolment, the reader's topics and pause), and its email (a sequence step, a
confirmation or a newsletter issue)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.content.experiments import apply_variant
from nurture.content.rendering import SubscriberView
from nurture.content.sequences import Catalog
from nurture.content.topics import BROADCAST_TOPIC, topic_of
from nurture.delivery import statements as sql
from nurture.delivery.compose import Composed, compose_confirmation, compose_step
from nurture.delivery.issues import compose_broadcast, issues_of
from nurture.delivery.states import Job, Outcome, sendable_status, temporary
from nurture.delivery.verp import verp_address
from nurture.errors import ConfigError, TemplateError
from nurture.logsafe import bug_summary, domain_of, frames
from nurture.people.preferences import Holds, paused_reason
from nurture.people.subscribers import email_hash
from nurture.settings import Settings
from nurture.store.tables import DeliveryKind, EnrollmentStatus, utcnow

log = logging.getLogger(__name__)


def check(session: Session, jobs: list[Job], catalog: Catalog) -> Found:
    """Re-check a claimed group in the claim's transaction, reading what its emails need
    in a few queries for the whole group: a delivery that must not go out (or that the
    reader's pause holds) gets its outcome here, before the first is marked handed."""
    found = Found.load(session, jobs)
    for job in jobs:
        if (reader := found.readers.get(job.delivery.id)) is not None:
            job.domain, job.address_hash = domain_of(reader.email), email_hash(reader.email)
        reason = found.why_not(job.delivery)
        if reason is not None:
            job.outcome, job.error = Outcome.SKIPPED, reason
            continue
        held = found.held(job.delivery, catalog)
        if held is not None:  # a sequence step waits out a pause; anything else is skipped
            job.outcome = Outcome.SKIPPED if held[1] is None else Outcome.RETRY
            job.error, job.held_until = held
    return found


def compose_group(settings: Settings, found: Found, jobs: list[Job], catalog: Catalog) -> None:
    """Compose each checked delivery of a group from what `check` read: after the claim's
    transaction, so a group being rendered holds no lock (on SQLite, the database's)."""
    for job in jobs:
        if job.outcome is not None:
            continue
        token = job.delivery.attempts
        try:
            composed = _compose(settings, found, catalog, job.delivery,
                                found.view(job.delivery))  # fmt: skip
            job.composed = _with_bounce_address(settings, composed, job.delivery.id)
        except TemplateError as e:  # a broken template will not mend itself
            job.outcome, job.error = Outcome.FAILED, str(e)
        except ConfigError as e:  # the operator can fix it; keep the email for later
            job.outcome, job.error = Outcome.RETRY, str(e)
        except SQLAlchemyError:
            raise
        except Exception as e:  # a bug: count the attempt, so it cannot loop forever
            # Never the exception's text or repr: a UnicodeEncodeError's carries the
            # whole email, with its confirm and unsubscribe links.
            job.outcome, job.error = temporary(token, bug_summary(e))
            log.error("delivery %s to %s could not be composed: %s\n%s", job.delivery.id,
                      job.domain, job.error, frames(e))  # fmt: skip


@dataclass
class Found:
    """What a group's checks and templates read: each delivery's subscriber and
    enrolment state, suppressions, tags, the readers' choices and the group's issues,
    each loaded for the whole group at once."""

    readers: dict[int, Any]  # by delivery id
    suppressed: set[str]
    tags: dict[int, list[str]]  # by subscriber id
    holds: Holds
    issues: dict[int, Any]  # broadcasts, by id

    @classmethod
    def load(cls, session: Session, jobs: list[Job]) -> Found:
        if not jobs:
            return cls({}, set(), {}, Holds(), {})
        conn = session.connection()
        readers = {
            row.delivery_id: row
            for row in conn.execute(sql.READERS, {"ids": [j.delivery.id for j in jobs]})
        }
        hashes = list({email_hash(row.email) for row in readers.values()})
        suppressed = set(conn.execute(sql.SUPPRESSED, {"hashes": hashes}).scalars())
        tags: dict[int, list[str]] = {}
        sub_ids = list({row.id for row in readers.values()})
        for sub_id, name in conn.execute(sql.TAGS, {"ids": sub_ids}):
            tags.setdefault(sub_id, []).append(name)
        paused = {row.id: row.paused_until for row in readers.values()}
        holds = Holds.load(session, sub_ids, utcnow(), paused)
        return cls(readers, suppressed, tags, holds, issues_of(session, [j.delivery for j in jobs]))

    def why_not(self, delivery: Any) -> str | None:
        """The reason this delivery must not go out now, if there is one."""
        sub = self.readers.get(delivery.id)
        if sub is None:
            return "subscriber no longer exists"
        if email_hash(sub.email) in self.suppressed:
            return "address is suppressed"
        if sub.status != sendable_status(delivery.kind):
            return f"subscriber is {sub.status}"
        if delivery.enrollment_id is not None and sub.enrollment_status != EnrollmentStatus.ACTIVE:
            return f"enrolment is {sub.enrollment_status}"
        return None

    def held(self, delivery: Any, catalog: Catalog) -> tuple[str, datetime | None] | None:
        """(why, until) when the reader's choices stop this email: a topic they left, or
        a pause; `until` is set for a sequence step, which waits out the pause."""
        if delivery.kind == DeliveryKind.CONFIRM or delivery.is_test:
            return None
        sub = self.readers[delivery.id]
        seq = catalog.get(delivery.sequence or "")
        topic = (sub.broadcast_topic or BROADCAST_TOPIC if delivery.kind == DeliveryKind.BROADCAST
                 else topic_of(seq) if seq else str(delivery.sequence))  # fmt: skip
        left = self.holds.left_reason(sub.id, topic)
        if left is not None:
            return left, None
        until = self.holds.paused_until(sub.id)
        if until is None:
            return None
        return paused_reason(until), (until if delivery.kind == DeliveryKind.SEQUENCE else None)

    def view(self, delivery: Any) -> SubscriberView:
        sub = self.readers[delivery.id]
        return SubscriberView(
            email=sub.email, first_name=sub.first_name, timezone=sub.timezone,
            attributes=dict(sub.attributes or {}), tags=tuple(self.tags.get(sub.id, ())),
            link_key=sub.link_key,
        )  # fmt: skip


def _compose(settings: Settings, found: Found, catalog: Catalog, delivery: Any,
             view: SubscriberView) -> Composed:  # fmt: skip
    if delivery.kind == DeliveryKind.CONFIRM:
        return compose_confirmation(settings, view, delivery.subscriber_id)
    if delivery.kind == DeliveryKind.BROADCAST:
        return compose_broadcast(settings, found.issues.get(delivery.broadcast_id), delivery, view)
    seq = catalog.get(delivery.sequence or "")
    step = seq.step(delivery.step_id or "") if seq else None
    if seq is None or step is None:
        raise TemplateError(f"step {delivery.sequence}/{delivery.step_id} no longer exists")
    step = apply_variant(step, delivery.variant)  # the variant decided with the claim
    return compose_step(settings, seq, step, view, delivery.subscriber_id, delivery.id)


def _with_bounce_address(settings: Settings, composed: Composed, delivery_id: int) -> Composed:
    """The envelope sender (MAIL FROM, the Return-Path) as this delivery's VERP address."""
    sender = verp_address(settings, delivery_id)
    if sender is None:
        return composed
    return replace(composed, envelope=replace(composed.envelope, sender=sender))
