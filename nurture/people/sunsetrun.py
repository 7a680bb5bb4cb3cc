"""A sunset run as the commands ask for it: in a transaction of its own, or as a dry run
that lists whom it would move (nurture.people.sunset has the rules)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from nurture.content.sequences import catalog_for
from nurture.errors import ConfigError
from nurture.people.engaged import joined_at, latest
from nurture.people.sunset import (
    UNSUBSCRIBE,
    Rules,
    SunsetCounts,
    apply_sunset,
    no_jit,
    rules_for,
)
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber, SubscriberStatus, Sunset
from nurture.sunsetpolicy import SunsetPolicy


@dataclass(frozen=True)
class Affected:
    """One person a run would move, for the dry run's list."""

    email: str
    action: str  # "win-back", "won back", "unsubscribe", "stop broadcasts"
    last_engaged: datetime | None
    joined: datetime


def _people(where: ColumnElement[bool], *, rounds: bool) -> Select[Any]:
    query = select(Subscriber.email, latest(Subscriber.id), joined_at())
    if rounds:
        query = query.join(Sunset, Sunset.subscriber_id == Subscriber.id)
    return query.where(where).order_by(Subscriber.id)


def preview_sunset(session: Session, rules: Rules) -> tuple[SunsetCounts, list[Affected]]:
    """What `apply_sunset` would do now, and to whom; changes nothing."""
    then = "unsubscribe" if rules.policy.then == UNSUBSCRIBE else "stop broadcasts"
    no_jit(session)
    due = and_(rules.due(), Subscriber.status == SubscriberStatus.ACTIVE, ~rules.won_back())
    asked = [("won back", _people(rules.won_back(), rounds=True)),
             ("win-back" if rules.winback else then, _people(rules.entering(), rounds=False)),
             (then, _people(due, rounds=True))]  # fmt: skip
    affected = [Affected(email, action, last, joined)
                for action, query in asked for email, last, joined in session.execute(query)]  # fmt: skip
    left = session.scalar(select(func.count()).select_from(Sunset).where(rules.left())) or 0
    count = {a: sum(1 for row in affected if row.action == a) for a in {a for a, _ in asked}}
    return SunsetCounts(
        won_back=count.get("won back", 0), winback=count.get("win-back", 0), left=left,
        unsubscribed=count.get("unsubscribe", 0), stopped=count.get("stop broadcasts", 0),
    ), affected  # fmt: skip


@dataclass(frozen=True)
class SunsetRun:
    policy: SunsetPolicy
    counts: SunsetCounts
    #: Everyone a dry run would move (empty for a real run).
    affected: list[Affected]


def run_sunset(settings: Settings, now: datetime, *, dry_run: bool = False,
               look_every: timedelta | None = None) -> SunsetRun:  # fmt: skip
    """The policy now, in a transaction of its own (a dry run only reads; `look_every`:
    see apply_sunset); ConfigError without a policy, or with a win-back sequence that
    cannot be used."""
    policy = settings.sunset
    if policy is None:
        raise ConfigError('nurture.toml has no [sunset] policy: add one, like [sunset] with '
                          'inactive_for = "120d", winback = "win-back", then = "unsubscribe"')  # fmt: skip
    rules = rules_for(policy, catalog_for(settings.sequences_dir), now)
    with session_scope(settings) as session:
        if dry_run:
            counts, affected = preview_sunset(session, rules)
            return SunsetRun(policy, counts, affected)
        return SunsetRun(policy, apply_sunset(session, rules, look_every), [])
