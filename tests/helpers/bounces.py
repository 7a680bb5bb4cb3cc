"""Bounce test data: an email really sent with a VERP envelope sender, and the
provider samples of tests/data/bounces/ filled in for it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from nurture.delivery.sending import send_batch
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery
from tests.helpers.sending import enqueue_welcome

SAMPLES = Path(__file__).parent.parent / "data" / "bounces"
BOUNCE_ADDRESS = "bounces@bounce.crumb.example"


@dataclass(frozen=True)
class Sent:
    delivery_id: int
    address: str
    envelope_sender: str
    message_id: str


def send_welcome(settings, sink, address: str) -> Sent:
    """Enrol `address`, send its first email through the sink; what the sink saw."""
    [delivery_id] = enqueue_welcome(settings, address)
    send_batch(settings, [delivery_id])
    [received] = sink.to(address)
    with session_scope(settings) as session:
        mid = session.scalar(select(Delivery.message_id).where(Delivery.id == delivery_id))
    return Sent(delivery_id, address, received.sender, mid)


def sample(name: str, sent: Sent, *, verp: str | None = None) -> bytes:
    text = (SAMPLES / name).read_text()
    text = text.replace("{{VERP}}", sent.envelope_sender if verp is None else verp)
    text = text.replace("{{RCPT}}", sent.address).replace("{{MESSAGE_ID}}", sent.message_id)
    text = text.replace("{{NONCE}}", uuid.uuid4().hex)
    return text.replace("\n", "\r\n").encode()
