"""Joining and leaving, as the command line asks for it: add, tag, untag, set fields,
import, forget, unsubscribe. A tag or a confirmation can start sequences, an
unsubscribe ends them, hence here, above people/. Each takes the settings, opens its
own transaction and returns what there is to say. Sending is the caller's: what comes
back names the confirmation emails to hand to the queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nurture import clock
from nurture.content.fields import fields_for, parse_pairs
from nurture.content.sequences import catalog_for
from nurture.people import importing
from nurture.people.activity import on_tag
from nurture.people.csvfile import Parsed, Scanned, checked_batches, scan
from nurture.people.importing import import_rows
from nurture.people.subscribers import (
    ConsentInfo,
    add,
    add_tags,
    clean_tags,
    forget,
    get,
    queued_confirmations,
    remove_tags,
    set_attributes,
    tags_of,
    unsubscribe,
)
from nurture.settings import Settings
from nurture.store.engine import session_scope


@dataclass(frozen=True)
class Added:
    email: str
    status: str
    created: bool
    #: Confirmation emails to send (a new, unconfirmed subscriber has one).
    confirmations: list[int] = field(default_factory=list)


def add_subscriber(
    settings: Settings, address: str, *, first_name: str | None, timezone: str | None,
    tags: tuple[str, ...], attrs: tuple[str, ...], confirmed: bool,
) -> Added:  # fmt: skip
    """Add one subscriber (or update a known one's tags and fields), consent from the CLI."""
    catalog = catalog_for(settings.sequences_dir)
    attributes = fields_for(settings.workspace).values(parse_pairs(attrs))
    with session_scope(settings) as session:
        sub, created = add(session, catalog, address, clock.now(), first_name=first_name,
                           timezone=timezone, tags=list(tags), confirmed=confirmed,
                           consent=ConsentInfo(source="cli"), attributes=attributes)  # fmt: skip
        waiting = queued_confirmations(session, sub.id) if created and not confirmed else []
        return Added(sub.email, sub.status, created, waiting)


@dataclass(frozen=True)
class Tagged:
    #: The subscriber's tags now.
    tags: list[str]
    #: Asked for but already held: these start nothing.
    already: list[str]


def tag_subscriber(settings: Settings, address: str, tags: tuple[str, ...]) -> Tagged:
    """Add tags, starting the `tag:` sequences of the new ones only (a tag held already is
    not a new trigger, even for a `reentry: true` sequence), then react as to any activity."""
    with session_scope(settings) as session:
        sub = get(session, address)
        added = add_tags(session, sub.id, list(tags))
        on_tag(session, settings, sub.id, added, clock.now())
        already = [t for t in clean_tags(tags) if t not in added]
        return Tagged(tags_of(session, sub.id), already)


def untag_subscriber(settings: Settings, address: str, tags: tuple[str, ...]) -> list[str]:
    """Remove tags; returns the subscriber's tags now."""
    with session_scope(settings) as session:
        sub = get(session, address)
        remove_tags(session, sub.id, tags)
        return tags_of(session, sub.id)


def set_fields(
    settings: Settings, address: str, pairs: tuple[str, ...]
) -> tuple[str, dict[str, str]]:
    """Set declared fields from NAME=VALUE pairs (NAME= clears one); returns the address
    and each named field's value now ("" when cleared)."""
    values = fields_for(settings.workspace).values(parse_pairs(pairs))
    with session_scope(settings) as session:
        sub = get(session, address)
        set_attributes(sub, values)
        now_set = dict(sub.attributes or {})
        return sub.email, {k: str(now_set.get(k, "")) for k in values}


def forget_subscriber(settings: Settings, address: str) -> None:
    """Erase a subscriber and their history; the address stays suppressed."""
    with session_scope(settings) as session:
        forget(session, get(session, address), clock.now())


def unsubscribe_subscriber(settings: Settings, address: str, sequence: str | None) -> None:
    """Leave one sequence, or everything; what is queued is cancelled too."""
    with session_scope(settings) as session:
        unsubscribe(session, get(session, address), clock.now(), sequence=sequence,
                    consent=ConsentInfo(source="cli", wording=None))  # fmt: skip


def read_import(settings: Settings, file: Path) -> Scanned:
    """A CSV file read whole: a file that cannot be read at all is refused here, before
    anything is written; its rows are checked while they are written."""
    return scan(file, fields_for(settings.workspace))


@dataclass(frozen=True)
class Imported:
    added: int
    known: int
    #: Every bad row as `file:line: why`, in line order.
    problems: list[str]
    confirmations: list[int]


def import_parsed(
    settings: Settings, file: Path, scanned: Scanned, *, confirmed: bool,
    progress: Callable[[int], None] = lambda n: None,
) -> Imported:  # fmt: skip
    """Check and write the rows of `file`, a batch per transaction (consent source 'import')."""
    consent = ConsentInfo(source="import", form=file.name, wording=None)
    parsed = Parsed()
    outcome = import_rows(lambda: session_scope(settings), catalog_for(settings.sequences_dir),
                          checked_batches(scanned, parsed, importing.BATCH),
                          lambda: list(parsed.late.values()), clock.now(), confirmed=confirmed,
                          consent=consent, file=file.name, progress=progress)  # fmt: skip
    problems = sorted(parsed.problems + outcome.problems, key=_line_of)
    return Imported(outcome.added, outcome.existing + parsed.repeats, problems,
                    outcome.confirmations)  # fmt: skip


def _line_of(problem: str) -> int:
    """`file.csv:12: why` sorts by its line number."""
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
