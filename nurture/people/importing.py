"""Bulk import from CSV: the file read whole first (an unreadable file writes nothing), then
rows checked a batch at a time while the batch before is written, BATCH rows a transaction.

Why in bulk: the one-row `subscribers.add` costs ~7 statements per row (5,000 rows took
minutes). Here a batch costs a fixed handful of statements (the new rows staged by COPY
or executemany and inserted by one INSERT … SELECT; two consents each and the signup
enrolments made in the database from the new ids; known addresses, their tags and
fields; confirmations), and the rules stay those of `add`: the same
checks (`normalize_email`, `clean_first_name`, `check_timezone`, `clean_tags`, declared
fields), `--confirmed` enrols in `trigger: signup` sequences, and a tag a subscriber did
not have starts its `trigger: tag:<name>` sequences for an active subscriber.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, column, select, table, true, update
from sqlalchemy.orm import Session

from nurture.content.sequences import Catalog, Sequence
from nurture.people.csvfile import Row, no_collections
from nurture.people.enrolment import enroll_many, enroll_new
from nurture.people.subscribers import (
    ConsentInfo,
    email_hash,
)
from nurture.store.sql import (
    among,
    bulk_insert,
    constant,
    insert_each,
    insert_ignoring_conflicts,
    stage,
)
from nurture.store.tables import (
    Consent,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    Tag,
    new_link_keys,
)

#: Rows written per transaction.
BATCH = 5000
#: Connections writing batches at once on PostgreSQL (see import_rows).
WRITERS = min(2, os.cpu_count() or 1)
_S = cast(Table, Subscriber.__table__)


@dataclass
class Outcome:
    added: int = 0
    existing: int = 0
    problems: list[str] = field(default_factory=list)
    confirmations: list[int] = field(default_factory=list)


def import_batch(
    session: Session, catalog: Catalog, rows: list[Row], now: datetime, *,
    confirmed: bool, consent: ConsentInfo, outcome: Outcome, suppressed: set[str],
    file: str = "",
) -> None:  # fmt: skip
    """Write one batch in the session's transaction; counts go to `outcome`.

    New addresses are inserted first (ON CONFLICT DO NOTHING … RETURNING): in a fresh
    list that is nearly all, and the known ones are looked up among the rows it skipped.
    """
    conn = session.connection()
    by_email = {row.email: row for row in rows}
    fresh = [r for r in rows if email_hash(r.email) not in suppressed] if suppressed else rows
    signup = catalog.triggered_by("signup")
    ids = _insert_new(session, fresh, now, confirmed=confirmed, consent=consent,
                      outcome=outcome, signup=signup)  # fmt: skip
    known = _known(session, [r.email for r in rows if r.email not in ids])
    for row in rows:
        if row.email not in ids and row.email not in known:
            outcome.problems.append(f"{file}:{row.line}: {row.email} is suppressed "
                                    "(it bounced or asked to be forgotten)")  # fmt: skip
    outcome.added += len(ids)
    outcome.existing += len(known)
    _update_known(session, known, by_email)

    # Tags: the new ones of each subscriber start their `tag:` sequences (if active).
    held: dict[int, set[str]] = {}
    known_ids = [k.id for k in known.values()]
    if known_ids:
        for sid, name in conn.execute(select(Tag.subscriber_id, Tag.name)
                                      .where(among(session, Tag.subscriber_id, known_ids))):  # fmt: skip
            held.setdefault(sid, set()).add(name)
    active = {k.id for k in known.values() if k.status == SubscriberStatus.ACTIVE}
    if confirmed:
        active.update(ids.values())
    tag_rows: list[dict[str, Any]] = []
    pairs: list[tuple[int, Sequence]] = []
    for row in rows:
        if not row.tags:
            continue
        who: int | None = known[row.email].id if row.email in known else ids.get(row.email)
        if who is None:
            continue
        added = [t for t in row.tags if t not in held.get(who, ())]
        tag_rows += [{"subscriber_id": who, "name": t} for t in added]
        if who in active:
            pairs += [(who, seq) for t in added for seq in catalog.triggered_by(f"tag:{t}")]
    if tag_rows:
        bulk_insert(session, cast(Table, Tag.__table__), tag_rows,
                    conflict=["subscriber_id", "name"])  # fmt: skip
    enroll_many(session, pairs, now)


def _known(session: Session, emails: list[str]) -> dict[str, Any]:
    if not emails:
        return {}
    query = select(_S.c.id, _S.c.email, _S.c.status, _S.c.attributes)
    return {r.email: r for r in session.connection().execute(
        query.where(among(session, _S.c.email, emails)))}  # fmt: skip


def _insert_new(
    session: Session, rows: list[Row], now: datetime, *, confirmed: bool,
    consent: ConsentInfo, outcome: Outcome, signup: list[Sequence],
) -> dict[str, int]:  # fmt: skip
    """New subscribers, their consents, their `signup` enrolments (with `confirmed`) or
    confirmation (without); returns the new ones' ids by address.

    The rows' own values are staged (COPY on PostgreSQL), then one INSERT … SELECT …
    ON CONFLICT DO NOTHING RETURNING adds those not known meanwhile; consents and
    enrolments are made in the database from the new ids, a statement each.
    """
    if not rows:
        return {}
    staged = [(r.email, r.first_name, r.timezone, _json(r.attributes), key)
              for r, key in zip(rows, new_link_keys(len(rows)), strict=True)]  # fmt: skip
    stage(session, "import_rows", _S, list(_STAGED), staged)
    status = SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.PENDING
    shared = {"status": str(status), "source": consent.source, "created_at": now,
              "confirmed_at": now if confirmed else None,
              "confirmation_sent_at": None if confirmed else now, "score": 0}  # fmt: skip
    sub = table("import_rows", *(column(n, _S.c[n].type) for n in _STAGED))
    query = select(*sub.c, *(constant(_S.c[n], v).label(n) for n, v in shared.items())).where(
        true()
    )
    stmt = insert_ignoring_conflicts(session, _S, ["email"]).from_select(
        [*_STAGED, *shared], query, include_defaults=False
    )
    ids = {email: sid for sid, email in
           session.connection().execute(stmt.returning(_S.c.id, _S.c.email))}  # fmt: skip
    new = list(ids.values())
    if not new:  # every address was known
        return ids
    consents = cast(Table, Consent.__table__)
    for action in ["requested", "confirmed"] if confirmed else ["requested"]:
        insert_each(session, consents, "subscriber_id", new,
                    {"action": action, "at": now, "source": consent.source, "ip": consent.ip,
                     "user_agent": consent.user_agent, "form": consent.form,
                     "wording": consent.wording})  # fmt: skip
    if confirmed:
        enroll_new(session, new, signup, now)
    else:
        deliveries = cast(Table, Delivery.__table__)
        outcome.confirmations += bulk_insert(session, deliveries, [
            {"subscriber_id": sid, "kind": DeliveryKind.CONFIRM, "status": DeliveryStatus.QUEUED,
             "attempts": 0, "is_test": False, "created_at": now, "enqueued_at": now}
            for sid in new
        ], returning=(deliveries.c.id,)).scalars().all()  # fmt: skip
    return ids


#: The columns of a new subscriber that differ from row to row.
_STAGED = ("email", "first_name", "timezone", "attributes", "link_key")


def _json(attributes: dict[str, str]) -> str:
    return json.dumps(attributes) if attributes else "{}"


def _update_known(session: Session, known: dict[str, Any], by_email: dict[str, Row]) -> None:
    """A known subscriber gets the file's fields merged into theirs; nothing else changes."""
    changed = []
    for email, k in known.items():
        attrs = by_email[email].attributes
        merged = {**(k.attributes or {}), **attrs}
        if attrs and merged != k.attributes:
            changed.append({"sid": k.id, "attrs": merged})
    if changed:
        stmt = update(_S).where(_S.c.id == bindparam("sid")).values(attributes=bindparam("attrs"))
        session.execute(stmt, changed)


def import_rows(
    session_scope: Callable[[], Any], catalog: Catalog, batches: Iterable[tuple[list[Row], int]],
    late: Callable[[], list[Row]], now: datetime, *, confirmed: bool, consent: ConsentInfo,
    file: str = "", progress: Callable[[int], None] = lambda n: None,
) -> Outcome:  # fmt: skip
    """Write checked rows, one transaction per batch (committed batches stay written).

    `batches` yields each batch with the number of file rows it covers, and may check
    rows as it goes: the next batch is taken while the last one is being written. Then
    `late()` (rows repeating an address of an earlier batch) is written once every batch
    is, as known addresses.

    On PostgreSQL batches are written by WRITERS connections at once: most of an import's
    time is the database checking each new consent's and enrolment's foreign key, in
    the backend that inserts it, so two backends use two cores. The batches hold
    distinct addresses, so they touch distinct rows and cannot wait on each other.
    SQLite has one writer at a time: there, one connection.
    """
    outcome = Outcome()
    gc.freeze()  # what was made before, and the rows checked now, live to the end: no
    with no_collections():  # collection need walk them
        with session_scope() as session:  # read once: a list's suppressions are few
            suppressed = set(session.scalars(select(Suppression.email_hash)))
            postgresql = session.get_bind().dialect.name == "postgresql"

        def write(batch: list[Row]) -> Outcome:
            done = Outcome()
            if batch:
                with session_scope() as session, _sqlite_cache(session):
                    import_batch(session, catalog, batch, now, confirmed=confirmed,
                                 consent=consent, outcome=done, suppressed=suppressed,
                                 file=file)  # fmt: skip
            return done

        _write_all(WRITERS if postgresql else 1, write, batches, outcome, progress)
        _merge(outcome, write(late()))
    gc.unfreeze()  # (after an error, the process ends)
    return outcome


def _write_all(
    writers: int, write: Callable[[list[Row]], Outcome],
    batches: Iterable[tuple[list[Row], int]], outcome: Outcome, progress: Callable[[int], None],
) -> None:  # fmt: skip
    """Each batch written by one of `writers` threads as soon as it is checked; the next
    batch is checked meanwhile, at most two per writer ahead."""
    with ThreadPoolExecutor(writers) as pool:
        pending: dict[Future[Outcome], int] = {}

        def settle(futures: Iterable[Future[Outcome]]) -> None:
            for future in list(futures):
                _merge(outcome, future.result())  # a failed batch raises here
                progress(pending.pop(future))

        try:
            for batch, covered in batches:
                pending[pool.submit(write, batch)] = covered
                settle([f for f in pending if f.done()])
                if len(pending) > 2 * writers:
                    settle([next(as_completed(pending))])
            settle(as_completed(pending))
        finally:  # on an error, batches not yet begun are not begun
            for future in pending:
                future.cancel()


#: SQLite page cache for an import's batch, in KiB (the default is 2 MiB).
SQLITE_CACHE_KIB = 64 * 1024


@contextmanager
def _sqlite_cache(session: Session) -> Iterator[None]:
    """A bigger page cache on SQLite while a batch is written, then the connection's own
    again: a batch dirties more pages than the default cache holds, and each page pushed
    out early is written twice. Durability is unchanged (same journal, same sync)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        yield
        return
    was = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(was)}")


def _merge(outcome: Outcome, batch: Outcome) -> None:
    outcome.added += batch.added
    outcome.existing += batch.existing
    outcome.problems += batch.problems
    outcome.confirmations += batch.confirmations
