"""Everything `nurture stats` shows, read in one go: per step, per sequence (funnel and
live scores), the sales handoffs and the deliveries in transit."""

from __future__ import annotations

from dataclasses import dataclass

from nurture import clock
from nurture.content.sequences import catalog_for
from nurture.errors import NurtureError
from nurture.reports.deliverability import Deliverability, deliverability
from nurture.reports.stats import (
    DeliveryHealth,
    Funnel,
    Scores,
    StepStats,
    delivery_health,
    funnel,
    handoff_counts,
    scores,
    step_stats,
    sunset_counts,
)
from nurture.settings import Settings
from nurture.store.engine import session_scope


@dataclass(frozen=True)
class Overview:
    steps: list[StepStats]
    funnels: list[Funnel]
    #: Per funnel, in the same order; None for a sequence without `readiness:`.
    scores: list[Scores | None]
    handoffs: dict[str, int]
    health: DeliveryHealth
    deliverability: Deliverability | None = None
    #: People by sunset outcome (reports.stats.SUNSET_WORDS); empty before any round.
    sunset: dict[str, int] | None = None


def overview(settings: Settings, sequence: str | None = None) -> Overview:
    """The numbers of one sequence, or of all; NurtureError for an unknown name."""
    catalog = catalog_for(settings.sequences_dir)
    if sequence and catalog.get(sequence) is None:
        raise NurtureError(f"no sequence named {sequence!r}")
    names = [sequence] if sequence else sorted(catalog.sequences)
    with session_scope(settings) as session:
        return Overview(
            steps=step_stats(session, catalog, sequence),
            funnels=[funnel(session, catalog.sequences[n]) for n in names],
            scores=[scores(session, catalog.sequences[n]) for n in names],
            handoffs=handoff_counts(session),
            health=delivery_health(session, clock.now(), settings.resend_after),
            deliverability=deliverability(session, clock.now(), sequence),
            sunset=sunset_counts(session),
        )
