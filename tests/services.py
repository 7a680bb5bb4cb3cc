"""Real services for tests: PostgreSQL, Redis and an aiosmtpd sink.

A service that cannot be reached skips its tests locally but fails them under CI=true,
so CI never counts a skipped test as passing.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller

PG_ADMIN_URL = os.environ.get("NURTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NURTURE_TEST_REDIS", "redis://127.0.0.1:6379")


def unavailable(what: str, why: object) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true but unreachable: {why}")
    pytest.skip(f"{what} unreachable: {why}")


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test run, dropped afterwards."""
    import psycopg

    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        unavailable("PostgreSQL", e)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        from nurture.store.engine import dispose_all

        dispose_all()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: Marks a Redis database as taken (by a test run or a benchmark), so two never share one.
REDIS_CLAIM = "nurture:taken"
_CLAIM_EMPTY_DB = """
if redis.call('DBSIZE') == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600)
  return 1
end
return 0
"""


@contextmanager
def own_redis_database(base: str) -> Iterator[str]:
    """An empty Redis database (1-15) taken for this run alone, flushed afterwards.
    Raises redis.RedisError if Redis does not answer, LookupError if none is free."""
    import redis

    base = base.rstrip("/")
    redis.Redis.from_url(base, socket_connect_timeout=2).ping()
    token = uuid.uuid4().hex
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.eval(_CLAIM_EMPTY_DB, 1, REDIS_CLAIM, token):
            try:
                yield f"{base}/{number}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise LookupError("no empty Redis database among 1-15")


def flush_keeping_claim(url: str) -> None:
    """What a Redis restart without persistence does to the queues: everything gone,
    but the mark that this database is taken."""
    import redis

    client = redis.Redis.from_url(url)
    token = client.get(REDIS_CLAIM)
    with client.pipeline(transaction=True) as pipe:
        pipe.flushdb()
        pipe.set(REDIS_CLAIM, token or b"x", ex=3600)
        pipe.execute()
    client.close()


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=default_policy)


@dataclass
class SinkHandler:
    """Records every message; answers with a chosen SMTP error when told to."""

    messages: list[Received] = field(default_factory=list)
    #: address (or "*") -> (code, text); checked at RCPT time
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The client ends (address, port) messages came from: one per SMTP connection.
    peers: set[tuple[str, int]] = field(default_factory=set)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        answer = self.refuse.get(address.lower()) or self.refuse.get("*")
        if answer:
            return f"{answer[0]} {answer[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.peers.add(tuple(session.peer))
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
        return "250 Message accepted"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.recipients]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def to(self, address: str) -> list[Received]:
        return self.handler.to(address)
