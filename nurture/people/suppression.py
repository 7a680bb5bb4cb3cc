"""The suppression list: addresses never to mail again, kept as SHA-256 hashes.

Adding an address (by hand, by import from the service being replaced) cancels what is
queued for it; removing one is logged with who and why, because it may let mail go to
someone who bounced or complained.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nurture import clock
from nurture.errors import SubscriberError
from nurture.people.subscribers import email_hash, find, normalize_email, stop_sending
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.sql import insert_ignoring_conflicts
from nurture.store.tables import Suppression, SuppressionRemoval

_HASH = re.compile(r"^[0-9a-f]{64}$")
#: Rows written per transaction by an import.
IMPORT_BATCH = 1000


@dataclass(frozen=True)
class Entry:
    email_hash: str
    reason: str
    at: datetime


def list_suppressed(settings: Settings) -> list[Entry]:
    with session_scope(settings) as session:
        rows = session.execute(select(Suppression).order_by(Suppression.at, Suppression.id))
        return [Entry(s.email_hash, s.reason, s.at) for (s,) in rows]


def add_suppressed(settings: Settings, address: str, reason: str) -> bool:
    """Suppress one address; what is queued for it is cancelled. False if it already was."""
    address = normalize_email(address)
    with session_scope(settings) as session:
        return _add(session, address, reason, clock.now())


def _add(session: Session, address: str, reason: str, now: datetime) -> bool:
    added = _insert(session, email_hash(address), reason, now)
    sub = find(session, address)
    if sub is not None:
        stop_sending(session, sub, now, f"address suppressed ({reason})"[:200])
    return bool(added)


def remove_suppressed(settings: Settings, address: str, why: str, by: str) -> None:
    """Take an address off the list, logging who and why; SubscriberError if it is not on it."""
    address = normalize_email(address)
    if not why.strip():
        raise SubscriberError("say why the address may be mailed again (--reason)")
    digest, now = email_hash(address), clock.now()
    with session_scope(settings) as session:
        row = session.scalar(select(Suppression).where(Suppression.email_hash == digest))
        if row is None:
            raise SubscriberError(f"{address} is not on the suppression list")
        session.add(SuppressionRemoval(email_hash=digest, reason=row.reason, why=why.strip(),
                                       by=(by or "unknown")[:100], at=now))  # fmt: skip
        session.execute(delete(Suppression).where(Suppression.id == row.id))


def read_addresses(text: str) -> Iterator[str]:
    """Addresses (or our own exported hashes) from one per line, or a CSV with an
    `email` column (Mailchimp, SES, Postmark and SendGrid exports all have one)."""
    first = text.split("\n", 1)[0]
    if "," in first or ";" in first:
        reader = csv.DictReader(io.StringIO(text), dialect=csv.Sniffer().sniff(first, ",;"))
        column = next((c for c in reader.fieldnames or [] if "email" in c.lower()), None)
        if column is None:
            raise SubscriberError("the CSV file has no column named email")
        yield from (row[column].strip() for row in reader if (row.get(column) or "").strip())
        return
    yield from (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def import_suppressed(settings: Settings, file: Path, reason: str) -> tuple[int, list[str]]:
    """Suppress every address in `file`; returns how many were new, and the lines
    that are not addresses (nothing is written for those)."""
    values = list(read_addresses(file.read_text(encoding="utf-8-sig")))
    added, bad = 0, list[str]()
    for start in range(0, len(values), IMPORT_BATCH):
        with session_scope(settings) as session:
            now = clock.now()
            for value in values[start : start + IMPORT_BATCH]:
                added += _import_one(session, value, reason, now, bad)
    return added, bad


def _insert(session: Session, digest: str, reason: str, now: datetime) -> bool:
    """True when the hash was not on the list yet (RETURNING, not rowcount: psycopg
    reports -1 for a row left out by ON CONFLICT)."""
    stmt = insert_ignoring_conflicts(session, Suppression, ["email_hash"])
    stmt = stmt.values(email_hash=digest, reason=reason[:200], at=now)
    return session.scalar(stmt.returning(Suppression.id)) is not None


def _import_one(session: Session, value: str, reason: str, now: datetime, bad: list[str]) -> int:
    if _HASH.match(value.lower()):
        return int(_insert(session, value.lower(), reason, now))
    try:
        address = normalize_email(value)
    except SubscriberError:
        bad.append(value)
        return 0
    return int(_add(session, address, reason, now))


def export_lines(entries: Iterable[Entry]) -> Iterator[str]:
    """CSV of hash, reason and time: what `import` reads back into another workspace."""
    yield "email_sha256,reason,suppressed_at\n"
    for e in entries:
        reason = e.reason.replace('"', "'")
        yield f'{e.email_hash},"{reason}",{e.at.isoformat()}\n'
