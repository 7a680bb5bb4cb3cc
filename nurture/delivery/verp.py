"""VERP: each email's envelope sender names its delivery, so a bounce sent back to it
says which email failed, whatever the bounce looks like.

`bounces@bounce.example` (NURTURE_BOUNCE_ADDRESS) becomes
`bounces+<token>@bounce.example`, the token signed for the bounce purpose only: a
bounce cannot be forged for an email that was never sent. Some servers lower-case the
local part; the Message-ID recorded on the delivery is the second way back.
"""

from __future__ import annotations

import re

from nurture.errors import TokenError
from nurture.settings import Settings
from nurture.tokens import Purpose, make_token, read_token


def verp_address(settings: Settings, delivery_id: int) -> str | None:
    """The envelope sender for one delivery; None when bounce addresses are off."""
    if not settings.bounce_address:
        return None
    local, _, domain = settings.bounce_address.partition("@")
    return f"{local}+{make_token(settings.secret_key, Purpose.BOUNCE, delivery_id)}@{domain}"


def _pattern(bounce_address: str) -> re.Pattern[str]:
    local, _, domain = bounce_address.partition("@")
    return re.compile(rf"{re.escape(local)}\+([A-Za-z0-9._-]+)@{re.escape(domain)}", re.I)


def deliveries_named(settings: Settings, text: str) -> list[int]:
    """Every delivery whose signed VERP address appears in `text` (a bounce's headers
    and body), in order; tokens that do not verify are ignored."""
    if not settings.bounce_address:
        return []
    found: list[int] = []
    for token in _pattern(settings.bounce_address).findall(text):
        try:
            delivery_id = read_token(settings.secret_key, Purpose.BOUNCE, token)
        except TokenError:
            continue
        if isinstance(delivery_id, int) and delivery_id not in found:
            found.append(delivery_id)
    return found
