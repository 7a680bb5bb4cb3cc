"""Signed link tokens, each bound to one purpose so a click token cannot unsubscribe."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from nurture.errors import TokenError


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    CLICK = "click"
    OPEN = "open"


#: Confirmation links expire; unsubscribe links never do (the law wants them to keep working).
MAX_AGE = {Purpose.CONFIRM: 7 * 24 * 3600}


@lru_cache(maxsize=32)
def _serializer(secret: str, purpose: Purpose) -> URLSafeTimedSerializer:
    """One serializer per key and purpose: building one costs more than signing with it,
    and every email signs three or more links."""
    return URLSafeTimedSerializer(secret, salt=f"nurture.{purpose}")


def make_token(secret: str, purpose: Purpose, payload: Any) -> str:
    return _serializer(secret, purpose).dumps(payload)


def read_token(secret: str, purpose: Purpose, token: str) -> Any:
    """The payload, or TokenError for a tampered, foreign-purpose or expired token."""
    try:
        return _serializer(secret, purpose).loads(token, max_age=MAX_AGE.get(purpose))
    except SignatureExpired:
        raise TokenError("this link has expired") from None
    except BadSignature:
        raise TokenError("this link is not valid") from None


def link(base_url: str, secret: str, purpose: Purpose, payload: Any) -> str:
    prefix = {Purpose.CLICK: "c", Purpose.OPEN: "o"}.get(purpose, str(purpose))
    return f"{base_url}/{prefix}/{make_token(secret, purpose, payload)}"
