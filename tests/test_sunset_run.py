"""A sunset run over a whole list of mixed activity moves exactly the inactive people, on
SQLite and PostgreSQL; its dry run names the same people and changes nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from nurture.people.sunsetrun import run_sunset
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Enrollment, Event, Subscriber, Sunset
from tests.helpers.journeys import REAL_TIME_MODULES
from tests.helpers.sunset import insert_people, invoke, mixed_list, with_policy

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PEOPLE = 10_000


def fingerprint(settings) -> tuple:
    """Everything a run could change: rows per table, statuses, enrolments."""
    with session_scope(settings) as session:
        return (
            sorted(session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()),
            sorted(session.execute(select(Enrollment.sequence, Enrollment.status, func.count())
                                   .group_by(Enrollment.sequence, Enrollment.status)).all()),
            session.scalar(select(func.count()).select_from(Sunset)),
            session.scalar(select(func.count()).select_from(Event)),
        )  # fmt: skip


@pytest.mark.parametrize("winback", [True, False], ids=["win-back", "no win-back"])
def test_a_run_on_10000_subscribers_moves_exactly_the_inactive_ones(env, workspace, winback):
    keys = {"inactive_for": "120d", "then": "unsubscribe"}
    with_policy(workspace, **keys, **({"winback": "win-back"} if winback else {}))
    settings = load_settings(workspace, env=env)
    people = mixed_list(PEOPLE, NOW, timedelta(days=120))
    insert_people(settings, people)
    inactive = {p.email for p in people if p.inactive}
    assert 3000 < len(inactive) < 5000  # every kind is there, the inactive ones a minority

    before = fingerprint(settings)
    dry = run_sunset(settings, NOW, dry_run=True)
    assert fingerprint(settings) == before  # the dry run changed nothing
    action = "win-back" if winback else "unsubscribe"
    assert {a.email for a in dry.affected} == inactive
    assert {a.action for a in dry.affected} == {action}

    done = run_sunset(settings, NOW)
    assert done.counts == dry.counts
    with session_scope(settings) as session:
        moved = set(
            session.scalars(
                select(Subscriber.email).join(Sunset, Sunset.subscriber_id == Subscriber.id)
            )
        )
        in_winback = set(
            session.scalars(
                select(Subscriber.email)
                .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
                .where(Enrollment.sequence == "win-back", Enrollment.status == "active")
            )
        )
        unsubscribed = set(
            session.scalars(select(Subscriber.email).where(Subscriber.status == "unsubscribed"))
        )
    assert moved == inactive
    if winback:
        assert done.counts.winback == len(inactive) and in_winback == inactive
        assert unsubscribed == {p.email for p in people if p.status == "unsubscribed"}
    else:
        assert done.counts.unsubscribed == len(inactive) and in_winback == set()
        assert unsubscribed == inactive | {p.email for p in people if p.status == "unsubscribed"}
    # a second run at the same moment finds nobody new
    assert run_sunset(settings, NOW).counts.parts() == []  # fmt: skip


def test_the_dry_run_command_lists_and_counts_without_changing_anything(runner, env, workspace):
    with_policy(workspace, inactive_for="120d", winback="win-back", then="stop_broadcasts")
    settings = load_settings(workspace, env=env)
    people = mixed_list(24, NOW, timedelta(days=120))
    insert_people(settings, people)
    before = fingerprint(settings)
    with freeze_time(NOW, ignore=REAL_TIME_MODULES):
        out = invoke(runner, env, "sunset", "--dry-run")
        as_json = invoke(runner, env, "sunset", "--dry-run", "--format", "json")
    assert fingerprint(settings) == before
    lines = out.splitlines()
    assert lines[0] == ("policy: no open or click for 120d: send them 'win-back'; if still "
                        "silent 7d after its last email, stop their newsletters")  # fmt: skip
    assert lines[1] == "dry run, nothing changed; it would move 10 into the win-back"
    listed = sorted(line.split()[0] for line in lines[3:])
    assert listed == sorted(p.email for p in people if p.inactive)
    assert (
        "p00000@example.com                       win-back         never            2025-12-17"
        in out
    )
    assert (
        "p00010@example.com                       win-back         2026-07-05       2025-12-17"
        in out
    )
    found = json.loads(as_json)
    assert found["dry_run"] is True and found["counts"]["winback"] == 10
    assert sorted(a["email"] for a in found["affected"]) == listed


def test_two_runs_at_once_give_each_person_one_round(env, workspace):
    """send-due on two hosts at the same moment: the runs queue behind one lock, so
    nobody is put in the win-back twice."""
    with_policy(workspace, inactive_for="120d", winback="win-back", then="unsubscribe")
    settings = load_settings(workspace, env=env)
    people = mixed_list(1200, NOW, timedelta(days=120))
    insert_people(settings, people)
    inactive = {p.email for p in people if p.inactive}
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: run_sunset(settings, NOW), range(2)))
    assert sorted(r.counts.winback for r in runs) == [0, len(inactive)]
    with session_scope(settings) as session:
        rounds = session.execute(select(Sunset.subscriber_id, func.count())
                                 .group_by(Sunset.subscriber_id)).all()  # fmt: skip
        enrolled = session.scalar(select(func.count()).select_from(Enrollment))
    assert len(rounds) == len(inactive) and {n for _, n in rounds} == {1}
    assert enrolled == len(inactive)
