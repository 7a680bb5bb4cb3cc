"""Amazon SES bounces and complaints, posted by SNS to /webhooks/ses.

Only messages of the topics in NURTURE_SES_TOPIC_ARNS are read, and only once their
SNS signature verifies (sns.py). A subscription is confirmed by visiting its
SubscribeURL, on an SNS host only. A Notification carries SES's JSON: a `Bounce`
(bounceType Permanent is hard; Transient and Undetermined are soft), a `Complaint`
(unless its feedback type says it is none), or a `Delivery` and the other events of
event publishing, which are ignored.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from nurture.delivery.bounces.answers import IGNORED, Answer, answer
from nurture.delivery.bounces.reading import REASON_MAX, Notice
from nurture.delivery.bounces.sns import Rejected, fetch, verify
from nurture.settings import Settings

log = logging.getLogger(__name__)

#: ARF feedback types that are no complaint of the recipient: "this is not spam", and
#: a receiver's report that an email failed SPF or DKIM.
NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})


def handle_ses(settings: Settings, message: dict[str, Any], now: datetime) -> Answer:
    """Verify and act on one SNS message of SES's feedback topic."""
    if not settings.ses_topic_arns:
        return Answer(403, "the SES webhook is off: set NURTURE_SES_TOPIC_ARNS")
    if not message.get("Signature"):
        return Answer(401, "the message is not signed (SNS signs every message it posts: "
                           "subscribe this URL to the SES topic with raw message delivery off)")  # fmt: skip
    topic = str(message.get("TopicArn") or "")
    if not topic:
        return Answer(403, "the SNS message has no TopicArn, so it is from no topic in "
                           "NURTURE_SES_TOPIC_ARNS")  # fmt: skip
    if topic not in settings.ses_topic_arns:
        return Answer(403, f"topic {topic[:200]!r} is not in NURTURE_SES_TOPIC_ARNS")
    try:
        verify(message, now)
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            fetch(str(message["SubscribeURL"]))
            log.info("confirmed the SNS subscription to %s", topic)
            return Answer(200, f"subscribed to {topic}")
    except Rejected as e:
        return Answer(e.status, e.message)
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS unsubscribed /webhooks/ses from %s: bounces from it no longer "
                    "arrive", topic)  # fmt: skip
        return Answer(200, f"ignored: unsubscribed from {topic}")
    notices = ses_notices(str(message["Message"]), str(message["MessageId"]))
    return answer(settings, notices, "this SNS message") if notices else Answer(200, IGNORED)


def ses_notices(text: str, sns_id: str) -> list[Notice]:
    """One notice per recipient of an SES Bounce or Complaint notification; none for
    anything else (a Delivery, an event of event publishing, SES's test message)."""
    try:
        ses = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(ses, dict):
        return []
    kind = ses.get("notificationType") or ses.get("eventType")
    message_ids, where = _original(_dict(ses.get("mail")))
    if kind == "Bounce":
        bounce = _dict(ses.get("bounce"))
        hard = bounce.get("bounceType") == "Permanent"
        what = f"{bounce.get('bounceType')} ({bounce.get('bounceSubType')})"
        recipients, key = _list(bounce.get("bouncedRecipients")), "bounced"
    elif kind == "Complaint":
        complaint = _dict(ses.get("complaint"))
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        if feedback in NOT_COMPLAINTS:
            return []
        hard, what = True, f"{feedback} report"
        sub = complaint.get("complaintSubType")
        if sub:
            what += f" ({sub})"
        recipients, key = _list(complaint.get("complainedRecipients")), "complained"
    else:
        return []
    notices = []
    for recipient in recipients:
        address = str(recipient.get("emailAddress", "")).strip().lower()
        said = " ".join(str(recipient.get(k) or "") for k in ("status", "diagnosticCode"))
        notices.append(Notice(key, hard=hard, addresses=[address], provider="ses",
                              reason=f"{what}: {said.strip()}".rstrip(": ")[:REASON_MAX],
                              message_ids=message_ids, text=where,
                              key=f"ses:{sns_id}:{address}"))  # fmt: skip
    return notices


def _original(mail: dict[str, Any]) -> tuple[list[str], str]:
    """The Message-IDs the original email had, and where a VERP address may be: the
    envelope sender SES was given (`source`) and the original headers."""
    common = _dict(mail.get("commonHeaders"))
    headers = [h for h in _list(mail.get("headers")) if isinstance(h.get("value"), str)]
    ids = [str(common.get("messageId") or "")]
    ids += [h["value"] for h in headers if str(h.get("name", "")).lower() == "message-id"]
    where = " ".join([str(mail.get("source") or "")] + [h["value"] for h in headers])
    return [i.strip() for i in dict.fromkeys(ids) if i.strip().startswith("<")][:20], where


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
