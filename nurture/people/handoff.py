"""The sales handoff: when a subscriber first becomes sales-ready, tell sales once.

A `handoffs` row is written in the same transaction that records `sales_ready`; it is
the outbox. Delivering it claims the row with a conditional UPDATE, POSTs the signed
webhook and/or emails NURTURE_SALES_EMAIL, and records the outcome, so a receiver
that fails is retried with backoff and one that succeeds is never told twice.

Webhook signature: `X-Nurture-Signature: sha256=<hex>` is HMAC-SHA256 with
NURTURE_SALES_WEBHOOK_SECRET over `<X-Nurture-Timestamp>.<body>`; receivers should
also refuse timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nurture import clock
from nurture.content.sequences import Sequence
from nurture.delivery.mime import build_message
from nurture.delivery.transports import transport_for
from nurture.people.engagement import Facts
from nurture.people.subscribers import tags_of
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Event, Handoff, HandoffStatus, Subscriber

log = logging.getLogger(__name__)

#: Attempts before a handoff is marked failed (visible in `nurture stats`).
MAX_ATTEMPTS = 8
MIN_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=6)
#: A handoff claimed this long ago whose process died is tried again.
STALE_SENDING = timedelta(minutes=10)
#: Seconds to wait for the webhook receiver.
WEBHOOK_TIMEOUT = 10.0


def mark_ready(
    session: Session, settings: Settings, sub: Subscriber, seq: Sequence, facts: Facts,
    now: datetime,
) -> int | None:  # fmt: skip
    """Record that a subscriber became ready; a handoff id the first time, else None."""
    score = facts.score(seq.readiness)
    sub.score = max(sub.score or 0, score)
    if sub.ready_at is not None:
        return None
    sub.ready_at = now
    evidence = {
        "opened": sorted(facts.opened), "clicked": sorted(facts.clicked),
        "events": sorted(facts.events),
    }  # fmt: skip
    session.add(Event(subscriber_id=sub.id, kind="sales_ready", at=now,
                      data={"sequence": seq.name, "score": score, "evidence": evidence}))  # fmt: skip
    wanted = bool(settings.sales_webhook_url or settings.sales_email)
    handoff = Handoff(
        subscriber_id=sub.id, sequence=seq.name, score=score, evidence=evidence, created_at=now,
        status=HandoffStatus.PENDING if wanted else HandoffStatus.RECORDED,
    )  # fmt: skip
    session.add(handoff)
    session.flush()
    return handoff.id if wanted else None


def payload(sub: Subscriber, handoff: Handoff, tags: list[str]) -> dict[str, Any]:
    return {
        "event": "sales_ready",
        "subscriber": {
            "email": sub.email,
            "first_name": sub.first_name,
            "tags": tags,
            "timezone": sub.timezone,
        },  # fmt: skip
        "sequence": handoff.sequence,
        "score": handoff.score,
        "ready_at": sub.ready_at.isoformat() if sub.ready_at else None,
        "evidence": handoff.evidence,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff(attempts: int) -> timedelta:
    return min(MIN_BACKOFF * 2 ** max(0, attempts - 1), MAX_BACKOFF)


def deliver(settings: Settings, handoff_id: int) -> str:
    """Claim, deliver and record one handoff; returns its new status (or 'not-mine')."""
    now = clock.now()
    with session_scope(settings) as session:
        claimed = session.execute(
            update(Handoff)
            .where(
                Handoff.id == handoff_id,
                Handoff.status.in_([HandoffStatus.PENDING, HandoffStatus.RETRY])
                | ((Handoff.status == HandoffStatus.SENDING)
                   & (Handoff.claimed_at <= now - STALE_SENDING)),
            )
            .values(status=HandoffStatus.SENDING, attempts=Handoff.attempts + 1, claimed_at=now)
        ).rowcount  # fmt: skip
        if claimed != 1:
            return "not-mine"
        handoff = session.get(Handoff, handoff_id)
        sub = session.get(Subscriber, handoff.subscriber_id) if handoff else None
        if handoff is None or sub is None:
            return "not-mine"
        body = json.dumps(payload(sub, handoff, tags_of(session, sub.id))).encode()
        attempts, notified = handoff.attempts, handoff.notified_at is not None
        lead = (sub.email, sub.first_name)
    error = None
    if settings.sales_email and not notified:
        error = _notify(settings, lead, body)
        if error is None:
            notified = True
    if error is None and settings.sales_webhook_url:
        error = _post(settings, body)
    with session_scope(settings) as session:
        handoff = session.get(Handoff, handoff_id)
        if handoff is None:
            return "not-mine"
        handoff.notified_at = handoff.notified_at or (clock.now() if notified else None)
        handoff.last_error = error
        if error is None:
            handoff.status, handoff.delivered_at = HandoffStatus.DELIVERED, clock.now()
        elif attempts >= MAX_ATTEMPTS:
            handoff.status = HandoffStatus.FAILED
        else:
            handoff.status = HandoffStatus.RETRY
            handoff.next_attempt_at = clock.now() + backoff(attempts)
        status = str(handoff.status)
    if error:
        log.warning("sales handoff %s: %s", handoff_id, error)
    return status


def _post(settings: Settings, body: bytes) -> str | None:
    timestamp = str(int(clock.now().timestamp()))
    headers = {"Content-Type": "application/json", "User-Agent": "nurture",
               "X-Nurture-Timestamp": timestamp}  # fmt: skip
    if settings.sales_webhook_secret:
        headers["X-Nurture-Signature"] = sign(settings.sales_webhook_secret, timestamp, body)
    request = urllib.request.Request(  # noqa: S310 - the operator's own https/http URL
        settings.sales_webhook_url or "", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
            if 200 <= response.status < 300:
                return None
            return f"webhook answered {response.status}"
    except urllib.error.HTTPError as e:
        return f"webhook answered {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"webhook unreachable: {e}"


def _notify(settings: Settings, lead: tuple[str, str | None], body: bytes) -> str | None:
    from nurture.delivery.compose import sender_for
    from nurture.errors import DeliveryError, NurtureError

    data = json.loads(body)
    evidence = data["evidence"]
    text = (
        f"{lead[1] or lead[0]} <{lead[0]}> is ready for a sales conversation.\n\n"
        f"Sequence: {data['sequence']}\nScore: {data['score']}\nReady since: {data['ready_at']}\n"
        f"Opened: {', '.join(evidence['opened']) or '-'}\n"
        f"Clicked: {', '.join(evidence['clicked']) or '-'}\n"
        f"Events: {', '.join(evidence['events']) or '-'}\n\n"
        f"Their whole journey: nurture subscribers show {lead[0]}\n"
    )
    try:
        envelope = build_message(
            sender=sender_for(settings), to=settings.sales_email or "",
            subject=f"Sales-ready lead: {lead[0]}", html=f"<pre>{_escape(text)}</pre>",
            text=text, list_id="sales-handoff", list_name="Sales handoff",
            unsubscribe_url=None,
        )  # fmt: skip
        transport_for(settings.smtp_url, settings.outbox).send(envelope)
    except (DeliveryError, NurtureError) as e:
        return f"sales email: {e}"
    return None


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def due_handoffs(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Handoffs whose retry time has come (or that were never picked up)."""
    return list(
        session.scalars(
            select(Handoff.id)
            .where(
                ((Handoff.status == HandoffStatus.RETRY) & (Handoff.next_attempt_at <= now))
                | (Handoff.status == HandoffStatus.PENDING)
                | (
                    (Handoff.status == HandoffStatus.SENDING)
                    & (Handoff.claimed_at <= now - STALE_SENDING)
                )
            )
            .order_by(Handoff.id)
            .limit(limit)
        )
    )
