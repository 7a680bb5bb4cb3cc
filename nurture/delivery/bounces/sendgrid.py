"""SendGrid's signed event webhook at /webhooks/sendgrid.

SendGrid signs the timestamp header followed by the raw body with ECDSA P-256 and
SHA-256; the verification key it shows (NURTURE_SENDGRID_WEBHOOK_KEY) checks it. A
timestamp more than REPLAY_WINDOW away is a replay. The body is a batch of events:
`bounce` (type `bounce` is hard, `blocked` soft), `dropped` for an address SendGrid
already knows bounced, is invalid or complained, and `spamreport`; the rest (opens,
deliveries, …) is ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from nurture.delivery.bounces.answers import Answer, answer, stale
from nurture.delivery.bounces.reading import REASON_MAX, Notice
from nurture.errors import ConfigError
from nurture.mailsettings import sendgrid_verification_key
from nurture.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
#: `dropped` reasons that say what the address is: SendGrid's own lists of them.
DROPPED = {"Bounced Address": "bounced", "Invalid": "bounced",
           "Spam Reporting Address": "complained"}  # fmt: skip


def signed_by(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str, body: bytes) -> bool:
    """Whether `signature` (base64 DER) signs `timestamp` + `body` with `key`."""
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))  # fmt: skip
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def handle_sendgrid(settings: Settings, body: bytes, headers: Mapping[str, str],
                    now: datetime) -> Answer:  # fmt: skip
    """Verify and act on one batch of SendGrid events."""
    if settings.sendgrid_webhook_key is None:
        return Answer(403, "the SendGrid webhook is off: set NURTURE_SENDGRID_WEBHOOK_KEY")
    named = {k.lower(): v for k, v in headers.items()}
    signature, timestamp = named.get(SIGNATURE_HEADER, ""), named.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        return Answer(401, "no SendGrid signature: turn on the signed event webhook")
    try:
        key = sendgrid_verification_key(settings.sendgrid_webhook_key)
    except ConfigError as e:
        log.error("%s", e)
        return Answer(500, str(e))
    if not signed_by(key, signature, timestamp, body):
        return Answer(401, "the SendGrid signature does not verify")
    if refused := stale("SendGrid", timestamp, now):
        return refused
    try:
        events = json.loads(body)
    except (ValueError, RecursionError):
        return Answer(400, "the body is not JSON")
    if not isinstance(events, list):
        return Answer(400, "the body is not a list of SendGrid events")
    notices = [n for e in events if isinstance(e, dict) and (n := sendgrid_notice(e))]
    return answer(settings, notices, "this SendGrid call")


def sendgrid_notice(event: dict[str, Any]) -> Notice | None:
    """The bounce or complaint one event reports, if it reports one."""
    kind, why = event.get("event"), str(event.get("reason") or "")
    if kind == "bounce":
        what, hard = "bounced", event.get("type") != "blocked"
    elif kind == "spamreport":
        what, hard = "complained", True
    elif kind == "dropped" and why in DROPPED:
        what, hard = DROPPED[why], True
    else:
        return None
    address = str(event.get("email", "")).strip().lower()
    mid = str(event.get("smtp-id") or "").strip()
    said = " ".join(p for p in (str(event.get("status") or ""), why) if p)
    reason = said or ("spam complaint" if what == "complained" else str(kind))
    if kind == "dropped":
        reason = f"dropped: {reason}"
    event_id = str(event.get("sg_event_id") or "") or hashlib.sha256(
        json.dumps(event, sort_keys=True).encode()).hexdigest()  # fmt: skip
    return Notice(what, hard=hard, addresses=[address], reason=reason[:REASON_MAX],
                  provider="sendgrid", message_ids=[mid] if mid.startswith("<") else [],
                  key=f"sendgrid:{event_id}")  # fmt: skip
