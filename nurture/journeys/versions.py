"""The version of each sequence nurture last ran with, kept in the database.

`send-due`, the worker and `serve` call `record_workspace` when they load the workspace:
one read of the recorded hashes, and a write only for a sequence whose files changed.
Recording a new version is also the moment an edit takes effect on people already
waiting (`retimed`, the rules in docs/sequences-as-code.md): a changed delay moves
their due time by the difference, a changed gate is decided again at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nurture import clock
from nurture.content.sequences import Catalog, Sequence, Step, catalog_for
from nurture.content.snapshot import catalog_from_files, fingerprint, workspace_files
from nurture.journeys.planner import GATE_WAIT
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.sql import insert_ignoring_conflicts
from nurture.store.tables import Enrollment, EnrollmentStatus, SequenceVersion

log = logging.getLogger(__name__)


def record_workspace(settings: Settings, now: datetime | None = None) -> list[str]:
    """Record the sequences whose files changed since they were last recorded; returns
    their names. A sequence with errors is left out of the catalog, so its last good
    version stays recorded."""
    catalog = catalog_for(settings.sequences_dir)
    files = workspace_files(settings.workspace, catalog)
    hashes = {name: fingerprint(f) for name, f in files.items()}
    with session_scope(settings) as session:
        rows = session.execute(select(SequenceVersion.sequence, SequenceVersion.content_hash))
        known: dict[str, str] = {name: h for name, h in rows}
    changed = [name for name, h in hashes.items() if known.get(name) != h]
    for name in changed:
        with session_scope(settings) as session:
            if _record(session, catalog.sequences[name], files[name], hashes[name],
                       known.get(name), now or clock.now()):  # fmt: skip
                log.info("recorded a new version of sequence %s", name)
    return changed


def _record(
    session: Session, seq: Sequence, files: dict[str, str], new_hash: str, old_hash: str | None,
    now: datetime,
) -> bool:  # fmt: skip
    """Replace the recorded version if it is still `old_hash` (another process may have
    just done it: then nothing happens, so an edit is applied once)."""
    if old_hash is None:
        table = SequenceVersion.__table__
        inserted = session.execute(
            insert_ignoring_conflicts(session, table, ["sequence"]).values(  # type: ignore[arg-type]
                sequence=seq.name, content_hash=new_hash, files=files, recorded_at=now
            )
        )
        return bool(inserted.rowcount)  # type: ignore[attr-defined]
    old_files = session.execute(
        select(SequenceVersion.files).where(SequenceVersion.sequence == seq.name)
    ).scalar_one()
    won = session.execute(
        update(SequenceVersion)
        .where(SequenceVersion.sequence == seq.name, SequenceVersion.content_hash == old_hash)
        .values(content_hash=new_hash, files=files, recorded_at=now)
    )
    if not won.rowcount:  # type: ignore[attr-defined]
        return False
    old = catalog_from_files(old_files).get(seq.name)
    if old is not None:
        retime(session, old, seq, now)
    return True


def _gate(step: Step) -> tuple[object, ...]:
    return (step.when, step.wait_up_to, step.otherwise)


def retimed(
    due: datetime, waiting_for: str | None, old: Step | None, new: Step | None, now: datetime
) -> datetime:
    """When someone waiting for a step is due once its new version is recorded.

    - its delay changed: moved by the difference, so the due time is the previous send
      (or the enrolment) plus the new delay; a time already past is sent at the next run;
    - its gate changed while they wait at it: due now, so the next run decides the new
      gate (its `wait_up_to` still counts from the step's due time);
    - anything else (template, subject, other steps): unchanged.
    """
    if old is None or new is None:
        return due
    if _gate(old) != _gate(new) and (waiting_for or "").startswith(GATE_WAIT):
        return min(due, now)
    return due + (new.after - old.after)


def retime(session: Session, old: Sequence, new: Sequence, now: datetime) -> int:
    """Apply `retimed` to everyone waiting for a step whose delay or gate changed;
    returns how many due times moved."""
    moved = 0
    for step in new.steps:
        before = old.step(step.id)
        if before is None or (before.after == step.after and _gate(before) == _gate(step)):
            continue
        rows = session.execute(
            select(Enrollment.id, Enrollment.next_due_at, Enrollment.waiting_for).where(
                Enrollment.sequence == new.name,
                Enrollment.status == EnrollmentStatus.ACTIVE,
                Enrollment.next_step_id == step.id,
                Enrollment.next_due_at.is_not(None),
            )
        ).all()
        for eid, due, waiting_for in rows:
            if due is None:
                continue
            at = retimed(due, waiting_for, before, step, now)
            if at != due:
                session.execute(
                    update(Enrollment).where(Enrollment.id == eid).values(next_due_at=at)
                )
                moved += 1
    return moved


def recorded_files(settings: Settings) -> dict[str, dict[str, str]]:
    """The recorded files of every sequence, by sequence name; empty before the first run."""
    with session_scope(settings) as session:
        rows = session.execute(select(SequenceVersion.sequence, SequenceVersion.files)).all()
    return {name: dict(files) for name, files in rows}


def recorded_catalog(files: dict[str, dict[str, str]]) -> Catalog:
    """The catalog of the recorded versions, loaded as the workspace's own is."""
    merged = {path: text for seq_files in files.values() for path, text in seq_files.items()}
    return catalog_from_files(merged)
