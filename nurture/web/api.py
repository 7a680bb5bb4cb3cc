"""Machine endpoints: custom events with a bearer key, and a health check."""

from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from nurture import clock
from nurture.errors import SubscriberError
from nurture.health import health
from nurture.people import events
from nurture.people.subscribers import normalize_email
from nurture.web.body import BadBody, json_object
from nurture.web.common import error, settings

bp = Blueprint("api", __name__)
EVENT_FIELDS = ("email", "event", "data")


def _authorized() -> ResponseReturnValue | None:
    """None when the bearer key matches; else the refusal to send."""
    key = settings().api_key
    if not key:
        return error(403, "Forbidden", "the API is off: set NURTURE_API_KEY to turn it on")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes as long for a near miss as for a wild guess
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        response = jsonify(error="missing or wrong API key: send 'Authorization: Bearer <key>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
        return response, 401
    return None


@bp.post("/api/events")
def add_event() -> ResponseReturnValue:
    refused = _authorized()
    if refused is not None:
        return refused
    try:
        data = json_object(
            '{"email": "ana@example.com", "event": "demo_booked"}', stored_as_sent=True
        )
    except BadBody as e:
        return error(400, "Bad request", str(e))
    unknown = sorted(k for k in data if k not in EVENT_FIELDS)
    if unknown:
        return error(400, "Bad request", f"unknown field {unknown[0][:40]!r}: "
                     f"an event takes {', '.join(EVENT_FIELDS)}")  # fmt: skip
    email, name, extra = data.get("email"), data.get("event"), data.get("data", {})
    if not isinstance(email, str) or not isinstance(name, str):
        return error(400, "Bad request", "email and event are required, as text")
    if not isinstance(extra, dict):
        return error(400, "Bad request", "data must be a JSON object")
    try:
        email, name = normalize_email(email), events.check_event_name(name)
    except SubscriberError as e:
        return error(400, "Bad request", str(e))
    try:
        event = events.add_event(settings(), email, name, clock.now(), extra)
    except SubscriberError as e:  # the one left: no such subscriber
        return error(404, "Not found", str(e))
    return jsonify(status="recorded", id=event.id, email=email, event=name), 201


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """200 when the database (and Redis, when set) answers; 503 naming what does not."""
    body = health(settings())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if body["status"] == "ok" else 503
