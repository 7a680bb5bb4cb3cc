"""Telling sales about a ready lead (the outbox rows people/handoff.py records).

Delivering a handoff claims its row with a conditional UPDATE, POSTs the signed webhook
and/or emails NURTURE_SALES_EMAIL, and records the outcome, so a receiver that fails is
retried with backoff (the deliveries' retry policy, from one minute) and one that
succeeds is never told twice.

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
from datetime import timedelta
from typing import Any, cast

from markupsafe import escape
from sqlalchemy import CursorResult, update

from nurture import clock
from nurture.delivery.compose import sender_for
from nurture.delivery.dkim import signer_for
from nurture.delivery.mime import build_message
from nurture.delivery.states import RetryPolicy
from nurture.delivery.transports import transport_for
from nurture.errors import DeliveryError, NurtureError
from nurture.people.handoff import STALE_SENDING, payload
from nurture.people.subscribers import tags_of
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Handoff, HandoffStatus, Subscriber

log = logging.getLogger(__name__)

#: Handoffs are tried again after a minute, then twice as long each time, as emails are.
RETRIES = RetryPolicy(first=timedelta(minutes=1))
#: Seconds to wait for the webhook receiver.
WEBHOOK_TIMEOUT = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def deliver(settings: Settings, handoff_id: int) -> str:
    """Claim, deliver and record one handoff; returns its new status (or 'not-mine')."""
    now = clock.now()
    with session_scope(settings) as session:
        claimed = cast(CursorResult[Any], session.execute(
            update(Handoff)
            .where(
                Handoff.id == handoff_id,
                Handoff.status.in_([HandoffStatus.PENDING, HandoffStatus.RETRY])
                | ((Handoff.status == HandoffStatus.SENDING)
                   & (Handoff.claimed_at <= now - STALE_SENDING)),
            )
            .values(status=HandoffStatus.SENDING, attempts=Handoff.attempts + 1, claimed_at=now)
        )).rowcount  # fmt: skip
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
        elif RETRIES.gives_up(attempts):
            handoff.status = HandoffStatus.FAILED
        else:
            handoff.status = HandoffStatus.RETRY
            handoff.next_attempt_at = clock.now() + RETRIES.delay(attempts)
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
            unsubscribe_url=None, signer=signer_for(settings),
        )  # fmt: skip
        transport_for(settings.smtp_url, settings.outbox).send(envelope)
    except (DeliveryError, NurtureError) as e:
        return f"sales email: {e}"
    return None


def _escape(text: str) -> str:
    return str(escape(text))
