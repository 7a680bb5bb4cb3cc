"""Broker set-up and thin actors; the only module that imports dramatiq.

Without NURTURE_REDIS_URL (embedded mode) there is no broker to talk to: messages are
processed in-process by calling the same actor function, so the behaviour is the same.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from nurture.sending import send_delivery
from nurture.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Deliveries carried by one queue message: fewer, larger messages cost less per email.
CHUNK = 50
QUEUE = "nurture"

# Actors bind to the broker current at declaration; start with a stub and rebind in
# `configure`, so importing this module never reaches for a network broker.
dramatiq.set_broker(StubBroker())
_settings: Settings | None = None


def configure(settings: Settings) -> dramatiq.Broker:
    """Point the actors at this workspace's broker (Redis, or a stub in embedded mode)."""
    global _settings
    _settings = settings
    broker: dramatiq.Broker = (
        RedisBroker(url=settings.redis_url) if settings.redis_url else StubBroker()
    )
    dramatiq.set_broker(broker)
    for actor in (send_deliveries,):
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


def current_settings() -> Settings:
    global _settings
    if _settings is None:  # a worker process: configured from its environment
        _settings = load_settings(os.environ.get("NURTURE_WORKSPACE"))
    return _settings


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000, max_backoff=300_000)
def send_deliveries(delivery_ids: list[int]) -> list[str]:
    """Send each delivery; each is claimed on its own, so a redelivered message is harmless."""
    settings = current_settings()
    return [send_delivery(settings, delivery_id) for delivery_id in delivery_ids]


def dispatch(settings: Settings, delivery_ids: Iterable[int]) -> Counter[str]:
    """Hand deliveries to the workers, or send them here and now in embedded mode.

    Returns what happened: `enqueued` counts with a broker, outcomes in embedded mode.
    """
    if _settings is not settings:
        configure(settings)
    ids = list(delivery_ids)
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        if settings.embedded:
            counts.update(send_deliveries.fn(chunk))
        else:
            send_deliveries.send(chunk)
            counts["enqueued"] += len(chunk)
    return counts


def queue_depth(settings: Settings) -> int | None:
    """Messages waiting in the Redis queue (None in embedded mode); raises if unreachable."""
    if settings.embedded:
        return None
    import redis

    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=2)
    try:
        return int(client.llen(f"dramatiq:{QUEUE}")) + int(client.llen(f"dramatiq:{QUEUE}.DQ"))
    finally:
        client.close()
