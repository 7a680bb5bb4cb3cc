"""Re-check and compose a group of claimed deliveries, reading what they need in three
queries for the whole group: whether each may still go out (subscriber, suppression,
enrolment), and its email (a sequence step, a confirmation or a newsletter issue)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from nurture.content.rendering import SubscriberView
from nurture.content.sequences import Catalog, catalog_for
from nurture.delivery import statements as sql
from nurture.delivery.compose import Composed, compose_confirmation, compose_step
from nurture.delivery.issues import compose_broadcast, issues_of
from nurture.delivery.states import Job, Outcome, temporary
from nurture.delivery.verp import verp_address
from nurture.errors import ConfigError, TemplateError
from nurture.logsafe import bug_summary, domain_of, frames
from nurture.people.subscribers import email_hash
from nurture.settings import Settings
from nurture.store.tables import DeliveryKind, EnrollmentStatus, SubscriberStatus

log = logging.getLogger(__name__)


def check(session: Session, jobs: list[Job]) -> Found:
    """Re-check a claimed group in the claim's transaction, reading what its emails need
    in three queries for the whole group: a delivery that must not go out gets its
    outcome here."""
    found = Found.load(session, jobs)
    for job in jobs:
        if (reader := found.readers.get(job.delivery.id)) is not None:
            job.domain = domain_of(reader.email)
        reason = found.why_not(job.delivery)
        if reason is not None:
            job.outcome, job.error = Outcome.SKIPPED, reason
    return found


def compose_group(settings: Settings, found: Found, jobs: list[Job]) -> Catalog:
    """Compose each checked delivery of a group from what `check` read: after the claim's
    transaction, so a group being rendered holds no lock (on SQLite, the database's)."""
    catalog = catalog_for(settings.sequences_dir)  # once per group: it looks at the files
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
        except Exception as e:  # a bug: count the attempt, so it cannot loop forever
            # Never the exception's text or repr: a UnicodeEncodeError's carries the
            # whole email, with its confirm and unsubscribe links.
            job.outcome, job.error = temporary(token, bug_summary(e))
            log.error("delivery %s to %s could not be composed: %s\n%s", job.delivery.id,
                      job.domain, job.error, frames(e))  # fmt: skip
    return catalog


@dataclass
class Found:
    """What a group's checks and templates read: each delivery's subscriber and
    enrolment state, suppressions and tags, each loaded for the whole group at once."""

    readers: dict[int, Any]  # by delivery id
    suppressed: set[str]
    tags: dict[int, list[str]]  # by subscriber id
    issues: dict[int, Any]  # broadcasts, by id

    @classmethod
    def load(cls, session: Session, jobs: list[Job]) -> Found:
        if not jobs:
            return cls({}, set(), {}, {})
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
        return cls(readers, suppressed, tags, issues_of(session, [j.delivery for j in jobs]))

    def why_not(self, delivery: Any) -> str | None:
        """The reason this delivery must not go out now, if there is one."""
        sub = self.readers.get(delivery.id)
        if sub is None:
            return "subscriber no longer exists"
        if email_hash(sub.email) in self.suppressed:
            return "address is suppressed"
        wanted = (
            SubscriberStatus.PENDING
            if delivery.kind == DeliveryKind.CONFIRM
            else SubscriberStatus.ACTIVE
        )
        if sub.status != wanted:
            return f"subscriber is {sub.status}"
        if delivery.enrollment_id is not None and sub.enrollment_status != EnrollmentStatus.ACTIVE:
            return f"enrolment is {sub.enrollment_status}"
        return None

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
        issue = found.issues.get(delivery.broadcast_id)
        return compose_broadcast(settings, issue, delivery, view)
    seq = catalog.get(delivery.sequence or "")
    step = seq.step(delivery.step_id or "") if seq else None
    if seq is None or step is None:
        raise TemplateError(f"step {delivery.sequence}/{delivery.step_id} no longer exists")
    return compose_step(settings, seq, step, view, delivery.subscriber_id, delivery.id)


def _with_bounce_address(settings: Settings, composed: Composed, delivery_id: int) -> Composed:
    """The envelope sender (MAIL FROM, the Return-Path) as this delivery's VERP address."""
    sender = verp_address(settings, delivery_id)
    if sender is None:
        return composed
    return replace(composed, envelope=replace(composed.envelope, sender=sender))
