"""Who receives a broadcast: active subscribers in its segment whose address is not
suppressed, taken in id order so a fan-out can stop anywhere and resume after the
last id it finished.

Suppressions are stored as hashes, which SQL cannot compare with an address on every
database, so each batch is checked against them in one query.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.orm import Session

from nurture.people.subscribers import email_hash
from nurture.store.tables import Subscriber, Suppression

#: Subscribers read per query when counting.
COUNT_BATCH = 5000


def next_batch(
    session: Session, clause: ColumnElement[bool], after_id: int, size: int
) -> tuple[list[Row[int, str, str | None]], int | None]:
    """The next recipients after `after_id`, and the last id looked at (None: no more)."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.email, Subscriber.timezone)
        .where(clause, Subscriber.id > after_id)
        .order_by(Subscriber.id)
        .limit(size)
    ).all()
    if not rows:
        return [], None
    kept = set(unsuppressed(session, [row.email for row in rows]))
    return [row for row in rows if row.email in kept], rows[-1].id


def unsuppressed(session: Session, addresses: list[str]) -> list[str]:
    """The addresses that are not suppressed, in one query."""
    hashes = {address: email_hash(address) for address in addresses}
    suppressed = set(
        session.scalars(
            select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes.values()))
        )
    )
    return [address for address in addresses if hashes[address] not in suppressed]


def members(
    session: Session, clause: ColumnElement[bool], size: int = COUNT_BATCH
) -> Iterator[Row[int, str, str | None]]:
    after: int | None = 0
    while after is not None:
        rows, after = next_batch(session, clause, after, size)
        yield from rows


def count(session: Session, clause: ColumnElement[bool]) -> int:
    return sum(1 for _ in members(session, clause))


def sample(session: Session, clause: ColumnElement[bool], size: int = 5) -> list[str]:
    """A few addresses picked at random, to see that the segment means what you think."""
    picked = session.scalars(
        select(Subscriber.email).where(clause).order_by(func.random()).limit(size * 2)
    ).all()
    return sorted(unsuppressed(session, list(picked)))[:size]
