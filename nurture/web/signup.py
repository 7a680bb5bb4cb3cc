"""Signing up: the form, its POST (form-encoded or JSON) and the double opt-in.

A confirmation link only shows a page on GET; the subscription is confirmed by the
POST of its button, so mail scanners that follow every link confirm nothing.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from werkzeug.wrappers import Response

from nurture import clock
from nurture.db import session_scope
from nurture.models import Subscriber, SubscriberStatus
from nurture.subscribers import DEFAULT_WORDING, confirm_signup, request_signup
from nurture.tokens import Purpose
from nurture.web.common import (
    catalog,
    consent_info,
    error,
    gone,
    page,
    settings,
    signed_link,
    state,
)
from nurture.web.forms import parse_signup

#: Signups one client address may post; `NURTURE_SUBSCRIBE_LIMIT` in the app config.
SUBSCRIBE_LIMIT = "5 per minute; 30 per hour"
#: Least seconds a signup takes to answer; `NURTURE_SIGNUP_SECONDS` in the app config.
#: A new address costs a few inserts that a known one does not, and the difference
#: would tell who is subscribed; waiting out a floor makes both take the same time.
SIGNUP_SECONDS = 0.2
DONE = "Almost there: check your inbox for a link to confirm your subscription."


def _limit() -> str:
    return str(current_app.config.get("NURTURE_SUBSCRIBE_LIMIT", SUBSCRIBE_LIMIT))


def blueprint(limiter: Limiter) -> Blueprint:
    bp = Blueprint("signup", __name__)

    @bp.get("/subscribe")
    def form() -> ResponseReturnValue:
        sequence = request.args.get("sequence", "")[:100]
        values = {
            "sequence": sequence if catalog().get(sequence) else "",
            "tags": request.args.get("tags", "")[:200],
        }
        return page("subscribe.html", values=values, errors={}, wording=DEFAULT_WORDING)

    @bp.post("/subscribe")
    @limiter.limit(_limit)
    def subscribe() -> ResponseReturnValue:
        started = time.monotonic()
        as_json = request.is_json
        data = request.get_json(silent=True) if as_json else request.form.to_dict()
        if not isinstance(data, dict):
            return error(
                400, "Bad request", 'send a JSON object, like {"email": "ana@example.com"}'
            )
        signup = parse_signup(data, catalog())
        if signup.errors:
            if as_json:
                message = "; ".join(f"{k}: {v}" for k, v in signup.errors.items())
                return jsonify(error=message, fields=signup.errors), 400
            return page("subscribe.html", 400, values=signup.raw, errors=signup.errors,
                        wording=DEFAULT_WORDING)  # fmt: skip
        if not signup.spam:  # a bot filled the hidden field: answer as usual, keep nothing
            with session_scope(settings()) as session:
                delivery_id = request_signup(
                    session, catalog(), signup.email, clock.now(),
                    first_name=signup.first_name, timezone=signup.timezone, tags=signup.tags,
                    sequence=signup.sequence, consent=consent_info("api" if as_json else "form"),
                )  # fmt: skip
            state().background.send([delivery_id])
        # The same answer, in the same time, for new, pending and known addresses.
        _wait_out(started)
        if as_json:
            return jsonify(status="ok", message=DONE)
        return page("check_inbox.html", email=signup.email)

    @bp.after_request
    def cors(response: Response) -> Response:
        """Let the origins in NURTURE_CORS_ORIGINS post the form from their pages' scripts."""
        if request.path != "/subscribe":
            return response
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        allowed = settings().cors_origins
        if origin and (origin in allowed or "*" in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "3600"
        return response

    @bp.get("/confirm/<token>")
    @signed_link(Purpose.CONFIRM)
    def confirm_page(token: str, subscriber_id: int, _: str | None) -> ResponseReturnValue:
        return _confirm(token, subscriber_id, do_it=False)

    @bp.post("/confirm/<token>")
    @signed_link(Purpose.CONFIRM)
    def confirm(token: str, subscriber_id: int, _: str | None) -> ResponseReturnValue:
        return _confirm(token, subscriber_id, do_it=True)

    return bp


def _wait_out(started: float) -> None:
    floor = float(current_app.config.get("NURTURE_SIGNUP_SECONDS", SIGNUP_SECONDS))
    remaining = floor - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)


def _confirm(token: str, subscriber_id: int, *, do_it: bool) -> ResponseReturnValue:
    with session_scope(settings()) as session:
        sub = session.get(Subscriber, subscriber_id)
        if sub is None:
            return gone()
        email, first_name, status = sub.email, sub.first_name, sub.status
        if status == SubscriberStatus.PENDING and do_it:
            confirm_signup(session, catalog(), sub, clock.now(),
                           consent_info("form", form="confirmation page"))  # fmt: skip
    if status == SubscriberStatus.ACTIVE:
        return page("confirmed.html", email=email, first_name=first_name, already=True)
    if status != SubscriberStatus.PENDING:
        why = ("you unsubscribed after this link was sent. To get our emails again, sign up "
               "again" if status == SubscriberStatus.UNSUBSCRIBED
               else "emails to this address could not be delivered")  # fmt: skip
        return error(409, "This subscription can't be confirmed", f"Sorry, {why}.")
    if not do_it:
        return page("confirm.html", email=email, token=token, wording=DEFAULT_WORDING)
    state().background.wake()  # the first email is due now: no need to wait for the loop
    return page("confirmed.html", email=email, first_name=first_name, already=False)
