"""Sending test data: welcome emails claimed and queued, a transport that meddles."""

from __future__ import annotations

from nurture import clock
from nurture.content.sequences import catalog_for
from nurture.delivery.transports import transport_for
from nurture.journeys.scheduling import claim_due
from nurture.people.subscribers import add
from nurture.store.engine import session_scope


def enqueue_welcome(settings, *emails: str) -> list[int]:
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        for email in emails:
            add(session, catalog, email, clock.now(), confirmed=True)
    with session_scope(settings) as session:
        return claim_due(session, catalog, clock.now())


class Meddling:
    """A transport that really sends, after `meddle` ran while the email is on the wire."""

    def __init__(self, settings, meddle):
        self.real = transport_for(settings.smtp_url, settings.outbox)
        self.meddle, self.calls = meddle, 0

    def send(self, envelope):
        self.calls += 1
        if self.calls == 1:
            self.meddle()
        self.real.send(envelope)

    def close(self):
        self.real.close()
