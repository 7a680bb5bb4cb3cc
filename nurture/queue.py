"""Broker set-up, rate limiters and thin actors; with send_due.py, the only modules that
import dramatiq.

Without NURTURE_REDIS_URL (embedded mode) there is no broker to talk to: messages are
processed in-process by the same code, so the behaviour is the same. The database is the
source of truth; a queue message only says "look at these deliveries now", which is why
a lost, repeated or late message is harmless (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq import cli as dramatiq_cli
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware
from dramatiq.rate_limits import BucketRateLimiter, ConcurrentRateLimiter, RateLimiterBackend
from dramatiq.rate_limits.backends import RedisBackend, StubBackend

from nurture.delivery import handoffs
from nurture.delivery.ratelimit import RATE_KEY, SLOT_KEY, SLOT_TTL_MS, Gate, Throttle, bucket_for
from nurture.delivery.sending import Batch, send_batch, send_concurrently
from nurture.delivery.states import MAX_ATTEMPTS
from nurture.delivery.transports import close_thread_transport
from nurture.errors import ConfigError, NurtureError
from nurture.journeys.versions import record_workspace
from nurture.redisconn import redis_client
from nurture.settings import Settings, load_settings
from nurture.store.engine import dispose_all, get_engine
from nurture.store.tables import utcnow

log = logging.getLogger(__name__)

#: Deliveries carried by one queue message: fewer, larger messages cost less per email.
CHUNK = 50
QUEUE = "nurture"
#: Seconds a worker thread spends on one message before it hands the rest back to the
#: queue: no message comes near TIME_LIMIT_MS, however slow the rate limit makes it.
BATCH_BUDGET = 60.0
#: Dramatiq's TimeLimit per message: a last resort for a hung database call.
TIME_LIMIT_MS = 10 * 60 * 1000
#: Retries of one message: more than the database allows a delivery, so the database
#: decides when to give up (sending.MAX_ATTEMPTS) and Dramatiq never decides first.
MAX_RETRIES = MAX_ATTEMPTS + 2
#: Seconds a stopping worker waits for the sends in progress (each hands the rest of its
#: message back after its current email, so this is rarely reached).
WORKER_SHUTDOWN_TIMEOUT = 60


class BrokerUnavailable(NurtureError):
    """Redis cannot be reached; whatever was claimed is safe in the database."""


class _Stopping(Middleware):
    """Tells running actors that the worker is shutting down (SIGTERM), so each hands the
    rest of its message back after the send in progress instead of holding the shutdown.

    What is handed back during a shutdown is enqueued only once this worker's consumers
    are closed: a consumer stopped with messages in its prefetch cache leaves them to
    Redis's heartbeat timeout, a minute or more, instead of to the next worker."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        _stopping.set()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        with _handed_back_lock:
            rests, _handed_back[:] = list(_handed_back), []
        for ids in rests:
            send_deliveries.send(ids)


_stopping = threading.Event()
_handed_back: list[list[int]] = []
_handed_back_lock = threading.Lock()
# Actors bind to the broker current at declaration; start with a stub and rebind in
# `configure`, so importing this module never reaches for a network broker.
dramatiq.set_broker(StubBroker())
_settings: Settings | None = None
_throttle: Throttle | None = None


def configure(settings: Settings) -> dramatiq.Broker:
    """Point the actors at this workspace's broker (Redis, or a stub in embedded mode)."""
    global _settings, _throttle
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(url=settings.redis_url)
        broker.add_middleware(_Stopping())
        # Every worker shares the limits through Redis; SMTP slots are always counted.
        _throttle = throttle_for(
            RedisBackend(url=settings.redis_url), settings.send_rate, settings.smtp_concurrency
        )
    else:
        broker = StubBroker()
        # One process, whose senders (sending.send_concurrently) are as many as the SMTP
        # connections allowed: only a rate needs enforcing.
        _throttle = (
            throttle_for(StubBackend(), settings.send_rate, None) if settings.send_rate else None
        )
    dramatiq.set_broker(broker)
    for actor in (send_deliveries, deliver_handoffs):
        actor.broker = broker
        broker.declare_actor(actor)
    _settings = settings
    return broker


def throttle_for(
    backend: RateLimiterBackend, rate: float | None, concurrency: int | None
) -> Throttle:
    """The send limits on Dramatiq's rate limiters: shared through Redis by every worker
    with RedisBackend, kept in this process with StubBackend."""
    limiter, bucket_ms = None, 0
    if rate:
        limit, bucket_ms = bucket_for(rate)
        limiter = BucketRateLimiter(backend, RATE_KEY, limit=limit, bucket=bucket_ms)
    slots = [
        ConcurrentRateLimiter(backend, f"{SLOT_KEY}:{i}", limit=1, ttl=SLOT_TTL_MS)
        for i in range(concurrency or 0)
    ]
    return Throttle(limiter, bucket_ms, list(slots))


def setup_worker() -> None:
    """Entry point for Dramatiq's worker processes (`nurture worker`): the workspace and
    every setting come from the environment, as they do for any other command."""
    settings = load_settings(os.environ.get("NURTURE_WORKSPACE"))
    if not settings.redis_url:
        raise NurtureError("NURTURE_REDIS_URL is not set; `nurture worker` needs Redis")
    configure(settings)


def current_settings() -> Settings:
    global _settings
    if _settings is None:  # a worker process: configured from its environment
        configure(load_settings(os.environ.get("NURTURE_WORKSPACE")))
    assert _settings is not None
    return _settings


@contextmanager
def _gate(deadline: float | None = None) -> Iterator[Gate | None]:
    """This thread's gate for one batch of sends, or None when nothing limits it."""
    if _throttle is None:
        yield None
        return

    def should_stop() -> bool:
        return _stopping.is_set() or (deadline is not None and time.monotonic() > deadline)

    with _throttle.batch(should_stop=should_stop, on_release=close_thread_transport) as gate:
        yield gate


@dramatiq.actor(
    queue_name=QUEUE, max_retries=MAX_RETRIES, time_limit=TIME_LIMIT_MS,
    min_backoff=15_000, max_backoff=3_600_000,
)  # fmt: skip
def send_deliveries(delivery_ids: list[int]) -> None:
    """Send each delivery; each is claimed on its own, so a redelivered message is harmless.

    Temporary failures go back through Dramatiq's Retries with `Retry(delay=…)` set to
    the backoff the database recorded, so the retried message arrives when the rows are
    due; `send-due` re-enqueues them only if that message never comes.
    """
    settings = current_settings()
    with _gate(time.monotonic() + BATCH_BUDGET) as gate:
        batch = send_batch(settings, list(delivery_ids), gate)
    log.info(outcome_line(len(delivery_ids), batch))
    if batch.rest and _stopping.is_set():  # the rest was never claimed: hand it back
        with _handed_back_lock:
            _handed_back.append(batch.rest)
    elif batch.rest:  # out of time for one message
        send_deliveries.send(batch.rest)
    if batch.retry_at is not None:
        delay = max(0.0, (batch.retry_at - utcnow()).total_seconds())
        raise dramatiq.Retry(f"{batch.counts['retry']} to retry", delay=int(delay * 1000) + 1)


def outcome_line(size: int, batch: Batch) -> str:
    """What one message's deliveries became, for the worker's log (ids and counts only)."""
    c = batch.counts
    return (f"{size} deliveries: {c['sent']} sent, {c['failed']} failed, {c['retry']} to retry, "
            f"{c['skipped']} skipped, {c['not-mine']} already taken, "
            f"{len(batch.rest)} handed back")  # fmt: skip


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=TIME_LIMIT_MS)
def deliver_handoffs(handoff_ids: list[int]) -> None:
    """Tell sales about ready leads. Each handoff is claimed on its own; a failure is
    recorded with its backoff and `send-due` enqueues it again when that has passed."""
    settings = current_settings()
    for handoff_id in handoff_ids:
        handoffs.deliver(settings, handoff_id)


def dispatch_handoffs(settings: Settings, handoff_ids: list[int]) -> int:
    """Deliver handoffs here and now in embedded mode, or hand them to the workers."""
    if not handoff_ids:
        return 0
    if _settings is not settings:
        configure(settings)
    if settings.embedded:
        for handoff_id in handoff_ids:
            handoffs.deliver(settings, handoff_id)
    else:
        deliver_handoffs.send(list(handoff_ids))
    return len(handoff_ids)


def dispatch(settings: Settings, delivery_ids: Iterable[int]) -> Counter[str]:
    """Hand deliveries to the workers, or send them here and now in embedded mode.

    Returns what happened: `enqueued` counts with a broker, outcomes in embedded mode
    (plus `server-down` when the SMTP server failed and the rest was postponed).
    """
    if _settings is not settings:
        configure(settings)
    ids = list(delivery_ids)
    counts: Counter[str] = Counter()
    if settings.embedded:
        batch = send_concurrently(settings, ids, _gate)
        counts.update(batch.counts)
        counts["server-down"] += batch.server_down
        return counts
    chunks = [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]
    broker = send_deliveries.broker
    try:
        if isinstance(broker, RedisBroker) and _PIPELINED:
            _enqueue_pipelined(broker, [send_deliveries.message(chunk) for chunk in chunks])
            counts["enqueued"] += len(ids)
        else:
            for chunk in chunks:
                send_deliveries.send(chunk)
                counts["enqueued"] += len(chunk)
    except redis.RedisError as e:
        left = len(ids) - counts["enqueued"]
        raise BrokerUnavailable(
            f"cannot reach NURTURE_REDIS_URL ({e}); {left} deliveries are saved and the "
            "next send-due will enqueue them"
        ) from None
    return counts


#: Whether this Dramatiq's RedisBroker has the helpers `_enqueue_pipelined` relies on
#: (checked against dramatiq 2.2); without them each message is sent on its own.
_PIPELINED = all(
    hasattr(RedisBroker, name) for name in ("_should_do_maintenance", "_max_unpack_size")
)


def _enqueue_pipelined(broker: RedisBroker, messages: list[dramatiq.Message[Any]]) -> None:
    """`RedisBroker.enqueue` for many messages in one round trip instead of one each.

    Dramatiq has no batch enqueue. This takes the same steps as its `enqueue` (without a
    delay): a fresh `redis_message_id` per message, the `enqueue` middleware hooks, and
    Dramatiq's own `dispatch.lua` with the same arguments (so the heartbeat and the
    occasional queue maintenance still happen), only queued on a pipeline. A failure
    part way may leave some messages enqueued: harmless, as a message only says "look
    at these deliveries" and `send-due` re-enqueues what stays queued.
    """
    script = broker.scripts["dispatch"]
    sent = []
    with broker.client.pipeline(transaction=False) as pipe:
        for message in messages:
            message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
            broker.emit_before("enqueue", message, None)
            script(
                keys=[broker.namespace],
                args=[
                    "enqueue", current_millis(), message.queue_name, broker.broker_id,
                    broker.heartbeat_timeout, broker.dead_message_ttl,
                    broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                    message.options["redis_message_id"], message.encode(),
                ],
                client=pipe,
            )  # fmt: skip
            sent.append(message)
        pipe.execute()
    for message in sent:
        broker.emit_after("enqueue", message, None)


def queue_depth(settings: Settings) -> int | None:
    """Messages waiting in the Redis queue (None in embedded mode); raises if unreachable."""
    if settings.embedded:
        return None
    client = redis_client(settings.redis_url or "")
    try:
        return int(client.llen(f"dramatiq:{QUEUE}")) + int(client.llen(f"dramatiq:{QUEUE}.DQ"))
    finally:
        client.close()


def backlog(settings: Settings) -> int | None:
    """Messages waiting to be fetched by a worker (not counting delayed retries)."""
    if settings.embedded:
        return None
    client = redis_client(settings.redis_url or "")
    try:
        return int(client.llen(f"dramatiq:{QUEUE}"))
    except redis.RedisError as e:
        raise BrokerUnavailable(f"cannot reach NURTURE_REDIS_URL: {e}") from None
    finally:
        client.close()


def broker_status(settings: Settings) -> str:
    """One line for `nurture stats`: mode, reachability and what is waiting."""
    if settings.embedded:
        return "embedded (no NURTURE_REDIS_URL): send-due sends in-process"
    try:
        depth = queue_depth(settings)
    except redis.RedisError as e:
        return f"UNREACHABLE: {e}"
    return f"reachable, {depth} messages waiting"


def run_workers(
    settings: Settings, processes: int, threads: int, queues: tuple[str, ...],
    env_file: Path | None = None,
) -> int:  # fmt: skip
    """Check Redis and the database, then run Dramatiq's worker processes until they
    stop; returns their exit status. ConfigError, before anything starts, when Redis is
    not set or not reachable; the database's own clear error when it is not ready."""
    if not settings.redis_url:
        raise ConfigError(
            "NURTURE_REDIS_URL is not set: `nurture worker` needs Redis, e.g. "
            "NURTURE_REDIS_URL=redis://localhost:6379/0 (without it, send-due sends by itself)"
        )
    client = redis_client(settings.redis_url or "", 3)
    try:
        client.ping()
    except redis.RedisError as e:
        raise ConfigError(f"cannot reach NURTURE_REDIS_URL: {e}") from None
    finally:
        client.close()
    get_engine(settings)  # the database answers and is up to date, or a clear error now
    record_workspace(settings)  # the sequences the workers run with, for `nurture plan`
    dispose_all()  # worker processes are forked: each must open its own connections
    # Dramatiq's processes load the settings again, from the environment: the same
    # workspace and env file as this command's.
    os.environ["NURTURE_WORKSPACE"] = str(settings.workspace)
    if env_file:
        os.environ["NURTURE_ENV_FILE"] = str(env_file.resolve())
    args = ["nurture.queue:setup_worker", "--processes", str(processes), "--threads", str(threads),
            "--worker-shutdown-timeout", str(WORKER_SHUTDOWN_TIMEOUT * 1000),
            "--queues", *(queues or (QUEUE,))]  # fmt: skip
    return int(dramatiq_cli.main(dramatiq_cli.make_argument_parser().parse_args(args)))
