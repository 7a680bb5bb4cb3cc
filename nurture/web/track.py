"""The open pixel and the click redirect.

Both answer even when recording fails or tracking is off: a link in an email already
sent must keep working. The redirect goes only to the destination signed inside the
token; query strings and anything else in the request are ignored.
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, redirect, request
from flask.typing import ResponseReturnValue

from nurture import clock
from nurture.delivery.links import is_bot, read_click, read_open
from nurture.errors import TokenError
from nurture.people.events import record_for_delivery
from nurture.store.engine import session_scope
from nurture.web.common import bad_token, settings

log = logging.getLogger(__name__)
bp = Blueprint("track", __name__)
#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, private"


def _record(delivery_id: int, kind: str, data: dict[str, str]) -> None:
    s = settings()
    if not s.tracking:
        return
    bot = is_bot(request.user_agent.string, request.method)
    try:
        with session_scope(s) as session:
            record_for_delivery(session, delivery_id, kind, clock.now(), bot=bot, data=data,
                                settings=s)  # fmt: skip
    except Exception:  # the person still gets their page or image
        log.exception("could not record %s of delivery %s", kind, delivery_id)


@bp.get("/o/<token>")
def open_pixel(token: str) -> ResponseReturnValue:
    try:
        delivery_id = read_open(settings(), token)
    except TokenError as e:
        return bad_token(str(e))
    _record(delivery_id, "open", {})
    return Response(PIXEL, mimetype="image/gif", headers={"Cache-Control": NO_STORE})


@bp.get("/c/<token>")
def click(token: str) -> ResponseReturnValue:
    try:
        delivery_id, url = read_click(settings(), token)
    except TokenError as e:
        return bad_token(str(e))
    _record(delivery_id, "click", {"url": url})
    response = redirect(url, 302)
    response.headers["Cache-Control"] = NO_STORE
    return response
