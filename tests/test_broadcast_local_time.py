"""`--local-time`: the issue arrives at 09:00 on the subscriber's own clock, zone by zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

from freezegun import freeze_time

from nurture.cli import cli
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Broadcast
from tests.helpers.broadcast import ISSUE, add_people, invoke
from tests.helpers.journeys import REAL_TIME_MODULES

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # the day before, at noon UTC
TICK = timedelta(minutes=15)  # cron
ZONES = {
    "kenji@example.com": "Asia/Tokyo",  # UTC+9: 00:00 UTC
    "elsa@example.com": "Europe/Berlin",  # UTC+1: 08:00 UTC
    "tomas@example.com": "America/New_York",  # UTC-5: 14:00 UTC
    "nozone@example.com": None,  # NURTURE_TIMEZONE, Europe/London: 09:00 UTC
}


def test_issue_arrives_at_nine_local_in_each_zone(runner, env, workspace, sink):
    env = {**env, "NURTURE_TIMEZONE": "Europe/London"}
    settings = load_settings(workspace, env=env)
    add_people(settings, [{"email": e, "timezone": z} for e, z in ZONES.items()])
    arrivals: dict[str, list[datetime]] = {}
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        # the front matter says: send_at 2026-12-08 09:00, local_time true
        result = invoke(runner, env, "broadcast", "send", str(ISSUE))
        assert result.exit_code == 0, result.output
        assert "scheduled for Tue 2026-12-08 09:00 in each reader's zone" in result.output
        while datetime.now(UTC) <= START + timedelta(days=2):
            before = len(sink.messages)
            assert invoke(runner, env, "send-due").exit_code == 0  # cron
            for received in sink.messages[before:]:
                for address in received.recipients:
                    arrivals.setdefault(address, []).append(datetime.now(UTC))
            frozen.tick(TICK)

    assert sorted(arrivals) == sorted(ZONES)
    for address, zone in ZONES.items():
        [at] = arrivals[address]  # once
        local = at.astimezone(ZoneInfo(zone or "Europe/London"))
        assert (local.date().isoformat(), local.strftime("%H:%M")) == ("2026-12-08", "09:00"), (
            address
        )
        [received] = sink.to(address)
        assert parsedate_to_datetime(received.message["Date"]) == at
    assert arrivals["kenji@example.com"][0] == datetime(2026, 12, 8, 0, 0, tzinfo=UTC)
    assert arrivals["tomas@example.com"][0] == datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
    with session_scope(settings) as session:
        row = session.get(Broadcast, 1)
        assert row.state == "sent"
        # the fan-out began when 09:00 first came anywhere (UTC+14), the day before
        assert row.started_at == datetime(2026, 12, 7, 19, 0, tzinfo=UTC)


def test_local_time_needs_a_time_that_has_not_passed_everywhere(runner, env):
    result = runner.invoke(
        cli, ["broadcast", "send", str(ISSUE), "--at", "2020-01-07 09:00"], env=env
    )
    assert result.exit_code == 1
    assert "2020-01-07 09:00 has already passed in every time zone" in result.output
