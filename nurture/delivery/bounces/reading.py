"""Read a bounce or complaint message: what failed, how badly, and which email it was.

Delivery status notifications (RFC 3464) and the many non-standard bounces are read by
`flufl.bounce` (the detectors of GNU Mailman); complaint reports (ARF, RFC 5965) by
the `email` package. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Any

from flufl.bounce import all_failures

from nurture.errors import NurtureError

#: What a raw reason keeps: enough to read the server's answer, never a whole message.
REASON_MAX = 500
#: A server's answer quoted in a bounce's text: "550 5.1.1 …", "452 Mailbox full".
_SMTP_REPLY = re.compile(r"\b[45][0-9][0-9][ -]")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]{1,250}>)", re.I | re.M)


class UnreadableMessage(NurtureError):
    """Input that is not an email message at all (empty, or no header)."""


@dataclass
class Notice:
    """One bounce or complaint, as read from a message or a webhook."""

    kind: str  # "bounced" | "complained"
    hard: bool = False
    #: Addresses the report says failed (a DSN's Final-Recipient), lower-cased.
    addresses: list[str] = field(default_factory=list)
    reason: str = ""
    provider: str = ""
    #: Message-IDs of the email that bounced, as quoted in the report.
    message_ids: list[str] = field(default_factory=list)
    #: Text where a VERP address may be found (headers and quoted original).
    text: str = ""
    #: What makes this report handled once: its own Message-ID, or its bytes' hash.
    key: str = ""


def read_message(raw: bytes) -> Notice | None:
    """The bounce or complaint in `raw`; None for a message that is neither (an
    auto-reply, a newsletter sent to the bounce address)."""
    if not raw.strip() or b":" not in raw.split(b"\n", 1)[0]:
        raise UnreadableMessage("the input is not an email message (no header line)")
    msg = message_from_bytes(raw, policy=compat32)
    own_id = (msg.get("Message-ID") or "").strip()
    key = f"mid:{own_id}" if own_id else "sha256:" + hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8", "replace")
    quoted = [m.decode("ascii", "replace") for m in _MESSAGE_ID.findall(raw)]
    message_ids = [m for m in dict.fromkeys(quoted) if m != own_id]
    provider = _provider(msg)
    if _report_type(msg) == "feedback-report":
        return Notice("complained", hard=True, reason=_feedback_type(msg), provider=provider,
                      message_ids=message_ids, text=text, key=key)  # fmt: skip
    temporary, permanent = all_failures(msg)
    if not temporary and not permanent:
        return None
    failed = permanent or temporary
    return Notice(
        "bounced", hard=bool(permanent),
        addresses=sorted(a.decode("utf-8", "replace").lower() for a in failed),
        reason=_diagnostic(msg), provider=provider, message_ids=message_ids, text=text, key=key,
    )  # fmt: skip


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type") or "").lower()


def _feedback_type(msg: Message) -> str:
    """The ARF Feedback-Type (abuse, fraud, …) and the reporter's User-Agent."""
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = _fields(part)
            kind = fields.get("feedback-type", "abuse")
            agent = fields.get("user-agent")
            return f"{kind} report" + (f" ({agent})" if agent else "")
    return "abuse report"


def _fields(part: Message) -> dict[str, str]:
    """The `Name: value` fields of a report part, however the parser stored it."""
    payload = part.get_payload()
    blocks: list[Any] = payload if isinstance(payload, list) else [message_from_bytes(
        str(payload).encode("utf-8", "replace"), policy=compat32)]  # fmt: skip
    fields: dict[str, str] = {}
    for block in blocks:
        if not isinstance(block, Message):
            continue
        for name, value in block.items():
            fields.setdefault(name.lower(), " ".join(str(value).split()))
    return fields


def _diagnostic(msg: Message) -> str:
    """The server's own words: a DSN's Diagnostic-Code and Status, else the first lines
    of the human-readable part."""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            fields = _fields(part)
            said = fields.get("diagnostic-code") or fields.get("status") or ""
            status = fields.get("status")
            if said:
                return (f"{status} {said}" if status and status not in said else said)[:REASON_MAX]
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            body = part.get_payload(decode=True)
            if not isinstance(body, bytes):
                continue
            lines = [ln.strip() for ln in body.decode("utf-8", "replace").splitlines()]
            reply = next((ln for ln in lines if _SMTP_REPLY.search(ln)), None)
            return (reply or " ".join(ln for ln in lines if ln))[:REASON_MAX]
    return ""


def _provider(msg: Message) -> str:
    """Who reported it: a DSN's Reporting-MTA, else the domain the report came from."""
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/feedback-report"):
            fields = _fields(part)
            mta = fields.get("reporting-mta") or fields.get("user-agent")
            if mta:
                return mta.split(";")[-1].strip()[:100]
    sender = str(msg.get("From") or "")
    return sender.rpartition("@")[2].strip(" >").lower()[:100]
