"""Signed tracking links (opens, clicks) and bot flags; the events they record are
people/events.py's.

A click link carries its destination inside a signed token, so `/c/` can only ever
send people where an email of ours pointed them (no open redirect). Opens and clicks
made by mail-security scanners and image prefetchers are kept but flagged `bot`, so
reports and readiness scores can leave them out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from nurture.errors import TokenError
from nurture.settings import Settings
from nurture.tokens import Purpose, link, read_token

#: User agents of link scanners, previewers and generic HTTP clients. Gmail's and
#: Yahoo's image proxies are *not* here: they fetch when a person opens the email.
_BOT_AGENT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|preview|scan|curl|wget|python|go-http-client|java/"
    r"|okhttp|libwww|httpclient|headless|phantom|barracuda|proofpoint|mimecast|safelinks"
    r"|symantec|messagelabs|trendmicro|forcepoint|sophos|fireeye|ironport|microsoft office"
    r"|ms-office|outlook-ios",
    re.IGNORECASE,
)
#: Apple Mail Privacy Protection fetches every image up front with exactly this agent.
_APPLE_PREFETCH = "Mozilla/5.0"


def is_bot(user_agent: str | None, method: str = "GET") -> bool:
    """True for requests no person made: scanners, prefetchers, HEAD probes."""
    agent = (user_agent or "").strip()
    if method == "HEAD" or not agent or agent == _APPLE_PREFETCH:
        return True
    return bool(_BOT_AGENT.search(agent))


# -- links ---------------------------------------------------------------------------
def click_url(settings: Settings, delivery_id: int, url: str) -> str:
    return link(settings.base_url, settings.secret_key, Purpose.CLICK, {"d": delivery_id, "u": url})


def open_url(settings: Settings, delivery_id: int) -> str:
    return link(settings.base_url, settings.secret_key, Purpose.OPEN, {"d": delivery_id})


def link_rewriter(settings: Settings, delivery_id: int | None) -> Callable[[str], str] | None:
    """What `Renderer.render` calls for each `href` of an email, or None without tracking.

    The value it gets is HTML-escaped (`&amp;`), so it is unescaped before signing. Our
    own unsubscribe and confirm links are left alone: they must work without a detour.
    """
    if not settings.tracking or delivery_id is None:
        return None
    own = tuple(f"{settings.base_url}/{p}/" for p in ("unsubscribe", "confirm"))

    def rewrite(escaped: str) -> str:
        url = html.unescape(escaped)
        return escaped if url.startswith(own) else click_url(settings, delivery_id, url)

    return rewrite


def add_open_pixel(page: str, url: str) -> str:
    pixel = (
        f'<img src="{url}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;opacity:0">'
    )
    return page.replace("</body>", f"{pixel}</body>", 1) if "</body>" in page else page + pixel


def read_click(settings: Settings, token: str) -> tuple[int, str]:
    """(delivery id, destination) of a click token; TokenError if we did not sign it."""
    payload = read_token(settings.secret_key, Purpose.CLICK, token)
    try:
        delivery_id, url = int(payload["d"]), str(payload["u"])
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not valid") from None
    if urlsplit(url).scheme not in ("http", "https"):
        raise TokenError("this link is not valid")
    return delivery_id, url


def read_open(settings: Settings, token: str) -> int:
    payload = read_token(settings.secret_key, Purpose.OPEN, token)
    try:
        return int(payload["d"])
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not valid") from None
