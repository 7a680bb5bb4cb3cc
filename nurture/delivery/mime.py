"""The one place that builds an email's MIME bytes and headers.

Every email is the same shape: a `multipart/alternative` of a UTF-8 text part and a
UTF-8 HTML part, both quoted-printable. The bytes are written directly, the bodies
encoded by `binascii.b2a_qp` (C): building the same message through the `email`
package's classes and generator costs about ten times as much, and this is done for
every email sent. The `email` package still does what is subtle: encoded words for
non-ASCII headers (`email.header`), address quoting (`email.utils`) and Message-IDs.
"""

from __future__ import annotations

import binascii
import email.charset
import re
import secrets
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache
from typing import Protocol

CRLF = "\r\n"
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.header_encoding = email.charset.QP
#: Header values carry no line break of their own: one would start a forged header.
_BREAKS = str.maketrans({"\r": " ", "\n": " "})


@dataclass(frozen=True)
class Envelope:
    """What SMTP needs besides the bytes."""

    sender: str
    recipient: str
    message_id: str
    data: bytes


class Signer(Protocol):
    """Signs finished bytes (nurture.delivery.dkim.Signer)."""

    def sign(self, data: bytes) -> bytes: ...


#: Google's SenderId is 5 to 15 characters and the same for all our mail.
_SENDER_ID = (5, 15)
#: A Feedback-ID field: no colon (the separator), no space.
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]+")


def feedback_id(fields: tuple[str, str, str], domain: str) -> str:
    """Gmail's `Feedback-ID: a:b:c:SenderId`: campaign, stream and kind, then a stable
    sender id made of the From domain, so Postmaster Tools can say which step, sequence
    or issue draws spam complaints. Nothing personal goes in."""
    low, high = _SENDER_ID
    sender_id = _NOT_ID.sub("-", domain.replace(".", "-"))[:high].ljust(low, "-")
    return ":".join([*(_NOT_ID.sub("-", f)[:64] for f in fields), sender_id])


def _header(value: str) -> str:
    value = value.translate(_BREAKS)
    if value.isascii():
        return value
    return _encoded(value)


@lru_cache(maxsize=1024)
def _encoded(value: str) -> str:
    """RFC 2047 encoded words: the email package takes a tenth of a millisecond and
    more to make them, and a step's subjects repeat (the same first names come back)."""
    return Header(value, _UTF8_QP).encode(linesep=CRLF)


#: A bare address as email-validator lets subscribers in: nothing to parse or quote.
BARE_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


def _split(value: str) -> tuple[str, str]:
    """(display name, address): a subscriber's bare address as it is, and the few
    senders parsed once; the email package's parser costs tens of µs a call."""
    return ("", value) if BARE_ADDRESS.fullmatch(value) else _parse(value)


@lru_cache(maxsize=64)
def _parse(value: str) -> tuple[str, str]:
    if value.count("(") > 20:  # comments nest, and the parser recurses into each one
        return "", ""  # what parseaddr answers for any value it cannot read
    return parseaddr(value.translate(_BREAKS))


def _address(value: str) -> str:
    name, addr = _split(value)
    return formataddr((name, addr), charset="utf-8") if name else addr


def _qp(body: str) -> str:
    """A body as quoted-printable lines ending in CRLF (soft breaks included)."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n")
    # istext: line breaks stay breaks. Encoded with LF, then every break (soft ones
    # included) made CRLF. The CRLF after the body belongs to the boundary that
    # follows (RFC 2046), not to the body.
    encoded = binascii.b2a_qp(lines.encode("utf-8"), istext=True).decode("ascii")
    return encoded.replace("\n", CRLF) + CRLF


def _part(subtype: str, body: str) -> str:
    return (f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}{_qp(body)}")  # fmt: skip


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    html: str,
    text: str,
    list_id: str,
    list_name: str,
    unsubscribe_url: str | None,
    extra_headers: dict[str, str] | None = None,
    feedback: tuple[str, str, str] | None = None,
    signer: Signer | None = None,
) -> Envelope:
    """A `multipart/alternative` email with every header a bulk sender owes its readers:
    Message-ID, Date, List-Id (RFC 2919), RFC 8058 one-click List-Unsubscribe, Gmail's
    Feedback-ID (from `feedback`: campaign, stream, kind) and a DKIM signature (by
    `signer`, over the finished bytes, so every kind of email is signed alike)."""
    sender_addr = _split(sender)[1]
    domain = sender_addr.rpartition("@")[2] or "localhost"
    message_id = make_msgid(domain=domain)  # an explicit domain avoids a DNS lookup per call
    headers = [
        ("From", _address(sender)),
        ("To", _address(to)),
        ("Subject", _header(subject)),
        ("Date", formatdate(usegmt=True)),
        ("Message-ID", message_id),
        ("List-Id", _header(f"{list_name} <{list_id}.{domain}>")),
    ]
    if unsubscribe_url:
        headers.append(("List-Unsubscribe", f"<{unsubscribe_url.translate(_BREAKS)}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if feedback:
        headers.append(("Feedback-ID", feedback_id(feedback, domain)))
    headers.extend((name, _header(value)) for name, value in (extra_headers or {}).items())
    # A boundary that cannot occur in a quoted-printable body ("=_" is never produced).
    boundary = f"=_{secrets.token_hex(16)}"
    headers.append(("MIME-Version", "1.0"))
    headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    data = "".join(
        [
            *(f"{name}: {value}{CRLF}" for name, value in headers),
            CRLF,
            f"--{boundary}{CRLF}",
            _part("plain", text),
            f"--{boundary}{CRLF}",
            _part("html", html),
            f"--{boundary}--{CRLF}",
        ]
    )
    raw = data.encode("ascii")
    return Envelope(sender_addr, _split(to)[1], message_id, signer.sign(raw) if signer else raw)
