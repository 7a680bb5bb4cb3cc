"""One sequence email rendered exactly as it would be sent, for a sample subscriber or
a real one: what `nurture preview` prints."""

from __future__ import annotations

from nurture.content.experiments import apply_variant, variant_problem
from nurture.content.rendering import SubscriberView
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import Composed, compose_step
from nurture.errors import NurtureError
from nurture.people.subscribers import get, tags_of
from nurture.settings import Settings
from nurture.store.engine import session_scope

#: Who a preview is rendered for when no subscriber is named.
SAMPLE = SubscriberView(email="sam@example.com", first_name="Sam")


def preview_step(
    settings: Settings, sequence: str, step: str, address: str | None = None,
    variant: str | None = None,
) -> Composed:  # fmt: skip
    """The composed email of SEQUENCE's STEP (as `variant` sends it); NurtureError names
    what is not known."""
    catalog = catalog_for(settings.sequences_dir)
    seq = catalog.get(sequence)
    if seq is None:
        raise NurtureError(
            f"no sequence named {sequence!r} (known: {', '.join(catalog.sequences)})"
        )
    found = seq.step(step)
    if found is None:
        raise NurtureError(f"{sequence} has no step {step!r} (steps: "
                           f"{', '.join(s.id for s in seq.steps)})")  # fmt: skip
    if variant is not None:
        problem = variant_problem(f"{sequence} {step}", variant, [v.name for v in found.variants])
        if problem:
            raise NurtureError(problem)
        found = apply_variant(found, variant)
    view, sub_id = SAMPLE, 0
    if address:
        with session_scope(settings) as session:
            sub = get(session, address)
            view = SubscriberView(email=sub.email, first_name=sub.first_name,
                                  timezone=sub.timezone, attributes=dict(sub.attributes or {}),
                                  tags=tuple(tags_of(session, sub.id)),
                                  link_key=sub.link_key)  # fmt: skip
            sub_id = sub.id
    return compose_step(settings, seq, found, view, sub_id)
