"""Send windows land in the subscriber's own civil hours, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.content.sequences import SendWindow
from nurture.journeys.windows import next_opening

NY = ZoneInfo("America/New_York")
WEEKDAYS = SendWindow(days=("mon", "tue", "wed", "thu", "fri"), hours="09:00-17:00")


@pytest.mark.parametrize(
    ("due", "expected_local"),
    [
        # Friday evening before the March change -> Monday 09:00 EDT
        (datetime(2026, 3, 6, 23, 0, tzinfo=UTC), datetime(2026, 3, 9, 9, 0)),
        # Sunday of the change itself -> Monday 09:00
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), datetime(2026, 3, 9, 9, 0)),
        # inside the window: unchanged
        (datetime(2026, 3, 9, 14, 0, tzinfo=UTC), datetime(2026, 3, 9, 10, 0)),
        # Saturday before the November change -> Monday 09:00 EST
        (datetime(2026, 10, 31, 23, 0, tzinfo=UTC), datetime(2026, 11, 2, 9, 0)),
        # one minute before opening on Monday after the change
        (datetime(2026, 11, 2, 13, 59, tzinfo=UTC), datetime(2026, 11, 2, 9, 0)),
        # 17:00 is closed: next morning
        (datetime(2026, 11, 3, 22, 0, tzinfo=UTC), datetime(2026, 11, 4, 9, 0)),
    ],
)
def test_next_opening_is_inside_the_local_window(due, expected_local):
    got = next_opening(due, WEEKDAYS, NY)
    assert got.astimezone(NY).replace(tzinfo=None) == expected_local
    assert got >= due


def test_a_time_in_the_spring_forward_gap_moves_to_the_end_of_the_gap():
    early = SendWindow(hours="02:30-04:00")
    got = next_opening(datetime(2026, 3, 8, 6, 0, tzinfo=UTC), early, NY)  # 01:00 EST
    assert got == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first real minute
    assert got.astimezone(NY).hour == 3


def test_every_hour_of_a_year_lands_inside_the_window():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for hour in range(0, 365 * 24, 7):
        due = start + timedelta(hours=hour)
        local = next_opening(due, WEEKDAYS, NY).astimezone(NY)
        assert local.weekday() < 5 and 9 <= local.hour < 17, (due, local)
