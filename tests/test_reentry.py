"""`reentry: true`: someone who finished or left a sequence and is triggered again goes
through it again, with both rounds kept; without it, nobody is enrolled twice."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from nurture.cli import cli
from nurture.content.sequences import catalog_for
from nurture.people.subscribers import ConsentInfo, confirm, get, resubscribe
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Enrollment
from nurture.web import create_app
from tests.helpers.journeys import BROWSER, REAL_TIME_MODULES, run_cron

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def invoke(runner, env, *args) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def gear_sequence(workspace, reentry: bool) -> None:
    """Only a two-email `tag:gear` sequence in the workspace."""
    (workspace / "sequences" / "from-curious-to-customer.yaml").unlink()
    (workspace / "sequences" / "gear.yaml").write_text(textwrap.dedent(f"""
        name: gear
        trigger: tag:gear
        reentry: {str(reentry).lower()}
        steps:
          - {{id: hello, after: 0m, subject: "Your gear", template: curious-to-customer/welcome}}
          - {{id: care, after: 1d, subject: "Gear care", template: curious-to-customer/welcome}}
    """))  # fmt: skip


def tag_again(runner, env, email: str) -> None:
    invoke(runner, env, "subscribers", "untag", email, "gear")
    invoke(runner, env, "subscribers", "tag", email, "gear")


def rounds(settings) -> list[tuple[int, str, list[str]]]:
    """(round, status, steps sent) of each enrolment, in order."""
    with session_scope(settings) as session:
        return [
            (e.round, e.status, list(session.scalars(
                select(Delivery.step_id).where(Delivery.enrollment_id == e.id,
                                               Delivery.status == "sent").order_by(Delivery.id))))
            for e in session.scalars(select(Enrollment).order_by(Enrollment.id))
        ]  # fmt: skip


def test_a_finished_subscriber_tagged_again_goes_through_again(
    runner, env, sink, workspace, settings
):
    gear_sequence(workspace, reentry=True)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "kit@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "kit@example.com", "gear")
        run_cron(runner, env, frozen, START + timedelta(days=3))
        assert rounds(settings) == [(1, "completed", ["hello", "care"])]
        frozen.move_to(START + timedelta(days=5))
        tag_again(runner, env, "kit@example.com")
        invoke(runner, env, "subscribers", "tag", "kit@example.com", "gear")  # mid-round: no third
        run_cron(runner, env, frozen, START + timedelta(days=9))
    assert [m.message["Subject"] for m in sink.to("kit@example.com")] == [
        "Your gear", "Gear care", "Your gear", "Gear care"
    ]  # fmt: skip
    assert rounds(settings) == [(1, "completed", ["hello", "care"]),
                                (2, "completed", ["hello", "care"])]  # fmt: skip
    out = invoke(runner, env, "subscribers", "show", "kit@example.com")
    assert "gear (round 1)" in out and "gear (round 2)" in out
    assert out.count("gear/hello") == 2 and out.count("gear/care") == 2
    stats = invoke(runner, env, "stats", "gear")  # each email counted, each person once
    assert re.search(r"hello\s+education\s+2\s", stats) and "funnel: entered 1 " in stats


def test_one_who_left_by_unsubscribing_from_it_is_not_put_back(runner, env, sink, workspace):
    gear_sequence(workspace, reentry=True)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "kit@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "kit@example.com", "gear")
        invoke(runner, env, "send-due")
        invoke(runner, env, "unsubscribe", "kit@example.com", "--sequence", "gear")
        tag_again(runner, env, "kit@example.com")
        run_cron(runner, env, frozen, START + timedelta(days=5))
    assert [m.message["Subject"] for m in sink.to("kit@example.com")] == ["Your gear"]


@pytest.mark.parametrize("when", ["finished", "mid-round"])
def test_without_reentry_nobody_is_enrolled_twice(runner, env, sink, workspace, settings, when):
    gear_sequence(workspace, reentry=False)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "kit@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "kit@example.com", "gear")
        if when == "finished":
            run_cron(runner, env, frozen, START + timedelta(days=3))
        tag_again(runner, env, "kit@example.com")
        run_cron(runner, env, frozen, START + timedelta(days=9))
    assert [m.message["Subject"] for m in sink.to("kit@example.com")] == ["Your gear", "Gear care"]
    assert rounds(settings) == [(1, "completed", ["hello", "care"])]


def test_a_gate_in_the_second_round_looks_at_that_round(runner, env, sink, workspace, settings):
    """A click on round 1's email does not open round 2's `clicked:` gate."""
    gear_sequence(workspace, reentry=True)
    path = workspace / "sequences" / "gear.yaml"
    path.write_text(path.read_text().replace("after: 1d,", "after: 1d, when: {clicked: hello},"))
    client = create_app(settings).test_client()
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "kit@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "kit@example.com", "gear")
        invoke(runner, env, "send-due")
        html = sink.to("kit@example.com")[0].message.get_body(("html",)).get_content()
        link = re.search(r'href="https://crumb\.example(/c/[^"]+)"', html).group(1)
        assert client.get(link, headers={"User-Agent": BROWSER}).status_code == 302
        run_cron(runner, env, frozen, START + timedelta(days=3))
        frozen.move_to(START + timedelta(days=5))
        tag_again(runner, env, "kit@example.com")
        run_cron(runner, env, frozen, START + timedelta(days=9))
    assert [m.message["Subject"] for m in sink.to("kit@example.com")] == [
        "Your gear", "Gear care", "Your gear"
    ]  # fmt: skip
    out = invoke(runner, env, "subscribers", "show", "kit@example.com")
    assert "skipped   gear/care    (gate closed (needs a click in hello))" in out


def test_tagging_with_a_tag_already_held_starts_no_new_round(
    runner, env, sink, workspace, settings
):
    gear_sequence(workspace, reentry=True)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "rita@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "rita@example.com", "gear")
        run_cron(runner, env, frozen, START + timedelta(days=3))
        frozen.move_to(START + timedelta(days=5))
        out = invoke(runner, env, "subscribers", "tag", "rita@example.com", "gear")
        invoke(runner, env, "subscribers", "add", "rita@example.com", "--tag", "gear")
        csv = workspace / "people.csv"
        csv.write_text("email,tags\nrita@example.com,gear\n")
        invoke(runner, env, "subscribers", "import", str(csv), "--confirmed")
        run_cron(runner, env, frozen, START + timedelta(days=9))
    assert "rita@example.com already had: gear (nothing started)" in out
    assert [m.message["Subject"] for m in sink.to("rita@example.com")] == [
        "Your gear", "Gear care"
    ]  # fmt: skip
    assert rounds(settings) == [(1, "completed", ["hello", "care"])]


def test_confirming_again_after_leaving_starts_no_round_for_a_tag_held_before(
    runner, env, sink, workspace, settings
):
    gear_sequence(workspace, reentry=True)
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        invoke(runner, env, "subscribers", "add", "rita@example.com", "--confirmed")
        invoke(runner, env, "subscribers", "tag", "rita@example.com", "gear")
        run_cron(runner, env, frozen, START + timedelta(days=3))
        invoke(runner, env, "unsubscribe", "rita@example.com")
        frozen.move_to(START + timedelta(days=5))
        with session_scope(settings) as session:  # the resubscribe page, then the confirm button
            rita = get(session, "rita@example.com")
            resubscribe(session, rita, START + timedelta(days=5), ConsentInfo(source="web"))
            confirm(session, catalog_for(settings.sequences_dir), rita,
                    START + timedelta(days=5), ConsentInfo(source="web"))  # fmt: skip
        run_cron(runner, env, frozen, START + timedelta(days=9))
    assert rounds(settings) == [(1, "completed", ["hello", "care"])]
    assert [m.message["Subject"] for m in sink.to("rita@example.com")] == [
        "Your gear", "Gear care"
    ]  # fmt: skip
