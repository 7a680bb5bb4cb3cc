"""The sender of every email, checked where it is configured rather than at send time."""

from __future__ import annotations

import re
from email.utils import getaddresses

# An address as a sender needs it: local@domain.tld, no spaces or brackets.
_ADDRESS = re.compile(
    r"[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def sender_problem(value: str) -> str | None:
    """Why `value` is not a usable From: (one address, optionally with a name), or None.

    A From: that does not parse is sent anyway by smtplib and lands in spam or bounces,
    so it is refused before anything is sent."""
    # The parser recurses once per nested comment: past a few, refuse rather than recurse.
    parsed = getaddresses([value]) if value.count("(") <= 20 else []
    if len(parsed) == 1 and _ADDRESS.fullmatch(parsed[0][1]):
        return None
    return (
        "must be one address, optionally with a name, such as "
        f"'Crumb & Co <hello@crumb.example>', got {value!r}"
    )


def sender_domain(value: str) -> str:
    """The domain of a From: value, lower-cased ('' when it has none)."""
    parsed = getaddresses([value]) if value.count("(") <= 20 else []
    address = parsed[0][1] if parsed else ""
    return address.rpartition("@")[2].lower()


def aligned(domain: str, other: str) -> bool:
    """Relaxed DMARC alignment, as far as it can be told without the public suffix
    list: the same domain, or one a subdomain of the other (mail.crumb.example and
    crumb.example align; crumb.example and other.example do not)."""
    a, b = domain.lower().rstrip("."), other.lower().rstrip(".")
    return bool(a and b) and (a == b or a.endswith("." + b) or b.endswith("." + a))
