"""Opens, clicks and custom events: signed tracking links, bot flags and the events table.

A click link carries its destination inside a signed token, so `/c/` can only ever
send people where an email of ours pointed them (no open redirect). Opens and clicks
made by mail-security scanners and image prefetchers are kept but flagged `bot`, so
reports and readiness scores can leave them out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture import clock
from nurture.errors import SubscriberError, TokenError
from nurture.people.activity import on_activity
from nurture.people.subscribers import get as get_subscriber
from nurture.settings import Settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event
from nurture.tokens import Purpose, link, read_token

#: Event names the tracking endpoints write; `POST /api/events` may not forge them.
RESERVED = frozenset({"open", "click", "unsubscribe"})
#: A custom event name: short, lower case, no spaces (`demo_booked`, `pricing:viewed`).
EVENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
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


# -- events --------------------------------------------------------------------------
def record(
    session: Session, subscriber_id: int, kind: str, now: datetime, *,
    delivery_id: int | None = None, bot: bool = False, data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Event:  # fmt: skip
    """Store an event; with `settings`, let goals, readiness and gates react to it at once
    (a bot's event is kept but changes nothing)."""
    event = Event(subscriber_id=subscriber_id, delivery_id=delivery_id, kind=kind, at=now,
                  bot=bot, data=data or {})  # fmt: skip
    session.add(event)
    session.flush()
    if settings is not None and not bot and kind != "unsubscribe":
        on_activity(session, settings, subscriber_id, now)
    return event


def record_for_delivery(
    session: Session, delivery_id: int, kind: str, now: datetime, *, bot: bool,
    data: dict[str, Any] | None = None, settings: Settings | None = None,
) -> Event | None:  # fmt: skip
    """An open or click of one email; None when the email is gone (its subscriber forgotten)."""
    subscriber_id = session.scalar(select(Delivery.subscriber_id).where(Delivery.id == delivery_id))
    if subscriber_id is None:
        return None
    return record(session, subscriber_id, kind, now, delivery_id=delivery_id, bot=bot, data=data,
                  settings=settings)  # fmt: skip


def check_event_name(name: str) -> str:
    name = (name or "").strip()
    if not EVENT_NAME.match(name):
        raise SubscriberError(
            f"{name!r} is not an event name: use up to 64 lower-case letters, digits, "
            "'_', '-', '.' or ':' (like demo_booked)"
        )
    if name in RESERVED:
        raise SubscriberError(f"{name!r} is recorded by nurture itself; pick another name")
    return name


def record_custom(
    session: Session, address: str, name: str, now: datetime, data: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Event:  # fmt: skip
    """A business event such as `demo_booked`, for goals and conditions to use."""
    name = check_event_name(name)
    sub_id = get_subscriber(session, address).id
    return record(session, sub_id, name, now, data=data, settings=settings)


def last_sent_delivery(session: Session, subscriber_id: int, sequence: str | None) -> int | None:
    """The email someone most likely acted on: their latest sent one (of this sequence)."""
    query = select(Delivery.id).where(
        Delivery.subscriber_id == subscriber_id, Delivery.sent_at.is_not(None)
    )
    if sequence is not None:
        query = query.where(Delivery.sequence == sequence)
    return session.scalar(query.order_by(Delivery.sent_at.desc(), Delivery.id.desc()).limit(1))


def record_custom_event(
    settings: Settings, address: str, name: str, data: dict[str, Any] | None = None
) -> Event:
    """`record_custom` in a transaction of its own, now; the event comes back committed.
    SubscriberError for a bad name or an unknown address."""
    with session_scope(settings) as session:
        return record_custom(session, address, name, clock.now(), data, settings=settings)
