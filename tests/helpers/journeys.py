"""Time travel for journey tests: `send-due` as cron would run it, but only at the
moments something falls due, so a 40-day journey costs a few dozen runs instead of
one every simulated half hour."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from nurture.cli import cli
from nurture.store import engine as db
from nurture.store.tables import (
    Broadcast,
    BroadcastState,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Handoff,
    HandoffStatus,
)

#: A reader's browser: opens and clicks from it count (scanners' and prefetchers' do not).
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36"
#: aiosmtpd's event loop must keep real time while the rest of the process travels.
REAL_TIME_MODULES = ["asyncio", "aiosmtpd", "threading", "selectors"]
#: Runs at one moment before the clock is moved on anyway (a step diverted to a step
#: due at once is sent by the next run, at the same moment, as `simulate` does).
SAME_MOMENT = 3
#: How far the clock moves when something stays due after SAME_MOMENT runs.
MIN_JUMP = timedelta(minutes=1)


def next_due_at(database_url: str) -> datetime | None:
    """The earliest moment `send-due` has work: a step due (or a gate's deadline, or
    the next send-window opening, which the planner stores as the step's due time), a
    retry or scheduled email, a scheduled broadcast or a handoff to retry."""
    queries = [
        select(func.min(Enrollment.next_due_at)).where(
            Enrollment.status == EnrollmentStatus.ACTIVE
        ),
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status.in_([DeliveryStatus.RETRY, DeliveryStatus.SCHEDULED])
        ),
        select(func.min(Broadcast.send_at)).where(Broadcast.state == BroadcastState.SCHEDULED),
        select(func.min(Handoff.next_attempt_at)).where(Handoff.status == HandoffStatus.RETRY),
    ]
    with db.engine_for(database_url).connect() as conn:
        found = [conn.scalar(q) for q in queries]
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in found if t is not None]
    return min(times, default=None)


def run_cron(
    runner: CliRunner,
    env: dict[str, str],
    frozen,  # freezegun's FrozenDateTimeFactory
    until: datetime,
    each: Callable[[datetime], None] | None = None,
) -> int:
    """`send-due` now, then at each next due time until `until`; `each(now)` runs after
    each pass. Returns how many times `send-due` ran."""
    runs = here = 0
    while datetime.now(UTC) <= until:
        result = runner.invoke(cli, ["send-due"], env=env)
        assert result.exit_code == 0, result.output
        runs += 1
        if each:
            each(datetime.now(UTC))
        due = next_due_at(env["NURTURE_DATABASE_URL"])
        if due is None or due > until:
            break
        now = datetime.now(UTC)
        here = here + 1 if due <= now else 0
        if here >= SAME_MOMENT:
            here, due = 0, now + MIN_JUMP
        if due > now:
            frozen.move_to(due)
    return runs
