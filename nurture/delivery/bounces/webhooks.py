"""Provider webhooks, verified as each provider documents before anything changes.

Amazon SES reports through SNS, which signs every message (ses.py, sns.py). SendGrid
signs its event batches with ECDSA (sendgrid.py). Postmark signs nothing: its webhook
URL carries a secret (basic-auth password or a `token` parameter). Mailgun signs
`timestamp + token` with HMAC-SHA256 and the webhook signing key; a timestamp more
than five minutes away or a token seen before is a replay. A call that does not
verify changes nothing and is answered 4xx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nurture import clock
from nurture.delivery.bounces.answers import IGNORED, Answer, answer, stale
from nurture.delivery.bounces.reading import REASON_MAX, Notice
from nurture.delivery.bounces.sendgrid import handle_sendgrid
from nurture.delivery.bounces.ses import handle_ses
from nurture.settings import Settings

POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy"})
PROVIDERS = ("ses", "postmark", "mailgun", "sendgrid")


def webhooks_on(settings: Settings) -> list[str]:
    """The providers whose webhook is set up (the others answer 403)."""
    on = {"ses": settings.ses_topic_arns, "postmark": settings.postmark_webhook_token,
          "mailgun": settings.mailgun_signing_key, "sendgrid": settings.sendgrid_webhook_key}  # fmt: skip
    return [p for p in PROVIDERS if on[p]]


def handle_webhook(
    settings: Settings, provider: str, body: bytes, headers: Mapping[str, str],
    query: Mapping[str, str], now: datetime | None = None,
) -> Answer:  # fmt: skip
    """Verify and handle one provider call; the answer to give it."""
    now = now or clock.now()
    if provider not in PROVIDERS:
        return Answer(404, f"no webhook for {provider!r}: use one of {', '.join(PROVIDERS)}")
    if provider == "sendgrid":  # its signature covers the raw body, read it as it came
        return handle_sendgrid(settings, body, headers, now)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return Answer(400, "the body is not JSON")
    if not isinstance(payload, dict):
        return Answer(400, "the body is not a JSON object")
    if provider == "ses":
        return handle_ses(settings, payload, now)
    if provider == "postmark":
        return _postmark(settings, payload, headers, query)
    return _mailgun(settings, payload, now)


def _postmark(settings: Settings, payload: dict[str, Any], headers: Mapping[str, str],
              query: Mapping[str, str]) -> Answer:  # fmt: skip
    secret = settings.postmark_webhook_token
    if not secret:
        return Answer(403, "the Postmark webhook is off: set NURTURE_POSTMARK_WEBHOOK_TOKEN")
    given = query.get("token", "")
    scheme, _, encoded = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(encoded, validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = ""
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return Answer(401, "wrong or missing Postmark webhook token")
    record, kind = str(payload.get("RecordType", "")), str(payload.get("Type", ""))
    address = str(payload.get("Email", "")).strip().lower()
    key = f"postmark:{record}:{payload.get('ID', '')}"
    if record == "SpamComplaint" or kind == "SpamComplaint":
        notice = Notice("complained", hard=True, addresses=[address], reason="spam complaint",
                        provider="postmark", key=key)  # fmt: skip
    elif record == "Bounce" and kind in POSTMARK_HARD | POSTMARK_SOFT:
        reason = str(payload.get("Details") or payload.get("Description") or kind)
        notice = Notice("bounced", hard=kind in POSTMARK_HARD, addresses=[address],
                        reason=f"{kind}: {reason}"[:REASON_MAX], provider="postmark",
                        key=key)  # fmt: skip
    else:
        return Answer(200, IGNORED)
    return answer(settings, [notice])


def _mailgun(settings: Settings, payload: dict[str, Any], now: datetime) -> Answer:
    key = settings.mailgun_signing_key
    if not key:
        return Answer(403, "the Mailgun webhook is off: set NURTURE_MAILGUN_SIGNING_KEY")
    sig = payload.get("signature")
    if not isinstance(sig, dict):
        return Answer(400, "no Mailgun signature in the body")
    timestamp, token = str(sig.get("timestamp", "")), str(sig.get("token", ""))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(expected, str(sig.get("signature", ""))):
        return Answer(401, "the Mailgun signature does not verify")
    if refused := stale("Mailgun", timestamp, now):
        return refused
    event = payload.get("event-data")
    if not isinstance(event, dict):
        return Answer(400, "no event-data in the body")
    for part in ("message", "delivery-status"):
        if not isinstance(event.get(part) or {}, dict):
            return Answer(400, f"event-data.{part} is not an object")
    if not isinstance((event.get("message") or {}).get("headers") or {}, dict):
        return Answer(400, "event-data.message.headers is not an object")
    notice = _mailgun_notice(event, f"mailgun:{token}")
    return answer(settings, [notice] if notice else [], "this Mailgun token")


def _mailgun_notice(event: dict[str, Any], key: str) -> Notice | None:
    kind = event.get("event")
    address = str(event.get("recipient", "")).strip().lower()
    headers = (event.get("message") or {}).get("headers") or {}
    mid = str(headers.get("message-id", "")).strip("<> ")
    ids = [f"<{mid}>"] if mid else []
    if kind == "complained":
        return Notice("complained", hard=True, addresses=[address], reason="spam complaint",
                      provider="mailgun", message_ids=ids, key=key)  # fmt: skip
    if kind != "failed":
        return None
    status = event.get("delivery-status") or {}
    reason = " ".join(str(status.get(k) or "") for k in ("code", "message", "description"))
    return Notice("bounced", hard=event.get("severity") == "permanent", addresses=[address],
                  reason=(reason.strip() or str(event.get("reason", "")))[:REASON_MAX],
                  provider="mailgun", message_ids=ids, key=key)  # fmt: skip
