"""Broadcasts as the command line asks for them: load and check an issue, look at its
audience, send a test copy, schedule, list, report and cancel. Each takes the settings
and opens its own transactions; what comes back is ready to print."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_

from nurture import clock
from nurture.broadcast import audience, core, report
from nurture.broadcast.compose import check_issue, compose_issue
from nurture.broadcast.source import Issue, load_issue
from nurture.content.experiments import variant_problem
from nurture.content.rendering import sample_context
from nurture.delivery.compose import Composed, sender_for
from nurture.delivery.issues import as_variant
from nurture.delivery.sending import send_delivery
from nurture.errors import NurtureError, SubscriberError
from nurture.people.preferences import not_left, not_paused
from nurture.people.segments import audience_clause, issue_topic
from nurture.people.subscribers import get as get_subscriber
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast, Delivery, DeliveryStatus


def load_checked(settings: Settings, source: str, **overrides: Any) -> Issue:
    """The issue from SOURCE with the command line's overrides, its segment, sender,
    experiment and templates (each variant's too) checked before anything is saved or
    sent."""
    issue = load_issue(settings, source, **overrides)
    audience_clause(settings, issue.segment)  # a segment error before anything else
    sender_for(settings)
    _check_experiment(issue)
    check_issue(settings, issue, source, issue.line_offset)
    for variant in issue.variants:
        try:
            check_issue(settings, as_variant(issue, issue.variants, variant.name), source,
                        issue.line_offset if variant.body_html is None else 0)  # fmt: skip
        except NurtureError as e:
            raise NurtureError(f"variant {variant.name}: {e}") from None
    return issue


def _check_experiment(issue: Issue) -> None:
    """A test share needs variants, and a way to pick that can be counted."""
    if issue.test_share is None:
        if issue.pick_after is not None or issue.pick_by is not None:
            raise core.BroadcastError("--pick-after and --by (pick_after, pick_by) go with "
                                      "--test-share (test_share): give it too")  # fmt: skip
        return
    if not issue.variants:
        raise core.BroadcastError(f"{issue.source}: --test-share needs variants to test: "
                                  "list them under `variants:` in the front matter")  # fmt: skip
    if issue.local_time:
        raise core.BroadcastError("--test-share cannot go with --local-time: the winner is "
                                  "picked at one time for everyone (add --no-local-time)")  # fmt: skip
    if issue.pick_by == "conversions" and issue.goal is None:
        raise core.BroadcastError(f"{issue.source}: --by conversions needs a goal: add e.g. "
                                  "`goal: {event: purchased}` to the front matter")  # fmt: skip


def preview(
    settings: Settings, source: str, subject: str | None = None, variant: str | None = None
) -> Composed:
    """The issue (as `variant` sends it) rendered for a sample subscriber, exactly as it
    would be sent."""
    issue = load_checked(settings, source, subject=subject)
    problem = variant and variant_problem(source, variant, [v.name for v in issue.variants])
    if problem:
        raise NurtureError(problem)
    web = f"{settings.base_url}/archive/{issue.slug}"
    content = as_variant(issue, issue.variants, variant)
    return compose_issue(settings, content, sample_context()["subscriber"], 0, web)


@dataclass(frozen=True)
class Audience:
    """Who an issue would reach now, and when it would go."""

    send_at: datetime
    local_at: str | None
    size: int
    sample: list[str]
    #: Readers of the segment left out because they left the issue's topic.
    left_topic: int = 0
    #: Readers of the segment, still in the topic, left out because they pause.
    paused: int = 0


def dry_run(settings: Settings, issue: Issue) -> Audience:
    """The audience and a few of its addresses, and how many readers their own choices
    leave out; nothing is saved."""
    now, topic = clock.now(), issue_topic(issue)
    send_at, local_at = core.schedule_times(settings, issue.send_at, issue.local_time, now)
    with session_scope(settings) as session:
        clause = audience_clause(settings, issue.segment, topic=topic, now=now)
        segment = audience_clause(settings, issue.segment)
        return Audience(send_at, local_at, audience.count(session, clause),
                        audience.sample(session, clause),
                        left_topic=audience.count(session, and_(segment, ~not_left(topic))),
                        paused=audience.count(session, and_(segment, not_left(topic),
                                                            ~not_paused(now))))  # fmt: skip


def send_test_copy(settings: Settings, issue: Issue, address: str) -> tuple[int, str]:
    """Save the issue as a draft and send one copy to a subscriber, here and now (even
    with workers), marked as a test; returns (draft id, address). NurtureError when the
    address is no subscriber or the copy was not sent."""
    now = clock.now()
    with session_scope(settings) as session:
        try:
            sub = get_subscriber(session, address)
        except SubscriberError:
            raise NurtureError(
                f"{address} is not a subscriber: a test copy is personalised for one. Add "
                f"yourself first: nurture subscribers add {address} --confirmed"
            ) from None
        row = core.save(session, settings, issue, now, schedule=False)
        delivery = Delivery(subscriber_id=sub.id, broadcast_id=row.id, kind="broadcast",
                            is_test=True, status=DeliveryStatus.QUEUED, created_at=now,
                            enqueued_at=now)  # fmt: skip
        session.add(delivery)
        session.flush()
        delivery_id, broadcast_id, email = delivery.id, row.id, sub.email
    outcome = send_delivery(settings, delivery_id)
    if outcome != "sent":
        with session_scope(settings) as session:
            error = session.get(Delivery, delivery_id).error  # type: ignore[union-attr]
        raise NurtureError(f"the test copy was not sent ({outcome}): {error}")
    return broadcast_id, email


@dataclass(frozen=True)
class Scheduled:
    broadcast_id: int
    send_at: datetime | None
    local_at: str | None
    #: Its time has come: the fan-out starts now.
    due: bool
    #: The audience as of now.
    size: int
    #: With a test share: when its winner is picked for the rest.
    pick_at: datetime | None = None


def schedule(settings: Settings, issue: Issue) -> Scheduled:
    """Schedule the issue (refused if this source is already on its way)."""
    with session_scope(settings) as session:
        row = core.save(session, settings, issue, clock.now(), schedule=True)
        clause = audience_clause(settings, row.segment, topic=issue_topic(row), now=clock.now())
        size = audience.count(session, clause)
        _check_share_reaches(issue, size)
        due = row.send_at is not None and row.send_at <= clock.now()
        return Scheduled(row.id, row.send_at, row.local_at, due, size, row.pick_at)


def _check_share_reaches(issue: Issue, size: int) -> None:
    """A test share must give each variant at least one reader of the audience as of
    now, or its winner would be picked on nobody's emails."""
    share, arms = issue.test_share, len(issue.variants)
    if share is None or not size or size * share >= arms:
        return
    raise core.BroadcastError(
        f"--test-share {share * 100:.3g}% of {size:,} subscribers is fewer than one reader "
        f"for each of the {arms} variants: give at least {arms / size * 100:.3g}%"
    )


def latest(settings: Settings, limit: int) -> list[tuple[Broadcast, int, int]]:
    """(broadcast, emails sent, emails in all) for the latest broadcasts, newest first."""
    with session_scope(settings) as session:
        return report.listing(session, limit)


def status(settings: Settings, broadcast_id: int) -> report.Status:
    """Where one broadcast stands; BroadcastError when there is no such broadcast."""
    with session_scope(settings) as session:
        return report.status(session, core.get(session, broadcast_id))


def cancel(settings: Settings, broadcast_id: int) -> tuple[int, int]:
    """Stop what is not sent yet; returns (emails stopped, emails already sent)."""
    with session_scope(settings) as session:
        stopped = core.cancel(session, broadcast_id, clock.now())
        sent = report.status(session, core.get(session, broadcast_id)).counts.get("sent", 0)
    return stopped, sent
