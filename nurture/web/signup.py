"""Signing up: the form, its POST (form-encoded or JSON) and the double opt-in.

A confirmation link only shows a page on GET; the subscription is confirmed by the
POST of its button, so mail scanners that follow every link confirm nothing.
"""

from __future__ import annotations

import time
from functools import partial

from flask import Blueprint, jsonify, make_response, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from nurture import clock
from nurture.content.fields import fields_for
from nurture.content.topics import topics_for
from nurture.people.links import confirm_by_link, link_holder
from nurture.people.signups import sign_up
from nurture.people.subscribers import DEFAULT_WORDING
from nurture.settings import Settings
from nurture.tokens import Claim, Purpose
from nurture.web.body import BadBody, json_object
from nurture.web.common import (
    NO_STORE,
    catalog,
    consent_info,
    error,
    gone,
    page,
    settings,
    signed_link,
    state,
    too_many,
)
from nurture.web.forms import parse_signup

DONE = "Almost there: check your inbox for a link to confirm your subscription."

bp = Blueprint("signup", __name__)


@bp.get("/subscribe")
def form() -> ResponseReturnValue:
    sequence = request.args.get("sequence", "")[:100]
    values = {
        "sequence": sequence if catalog().get(sequence) else "",
        "tags": request.args.get("tags", "")[:200],
    }
    return page("subscribe.html", values=values, errors={}, wording=DEFAULT_WORDING,
                topics=offered_topics(settings()), ticked=[])  # fmt: skip


@bp.post("/subscribe")
def subscribe() -> ResponseReturnValue:
    started, s = time.monotonic(), settings()
    wait = state().throttle.hit(s.subscribe_limit, request.remote_addr or "", "subscribe")
    if wait:
        return too_many(wait)
    as_json = request.is_json
    try:
        data = json_object('{"email": "ana@example.com"}') if as_json else _form_data()
    except BadBody as e:
        return error(400, "Bad request", str(e))
    offered = topics_for(s.workspace).signup
    signup = parse_signup(data, catalog, s.signup_tags, fields_for(s.workspace), offered)
    if signup.errors:
        if as_json:
            message = "; ".join(f"{k}: {v}" for k, v in signup.errors.items())
            return jsonify(error=message, fields=signup.errors), 400
        return page("subscribe.html", 400, values=signup.raw, errors=signup.errors,
                    wording=DEFAULT_WORDING, topics=offered_topics(s),
                    ticked=signup.topics or [])  # fmt: skip
    delivery_id = None
    if not signup.spam:  # a bot filled the hidden field: answer as usual, keep nothing
        # The same statements whatever the address is (nurture.people.signups)...
        delivery_id = sign_up(
            s, signup.email, clock.now(),
            consent=consent_info("api" if as_json else "form"),
            first_name=signup.first_name, timezone=signup.timezone, tags=signup.tags,
            sequence=signup.sequence, attributes=signup.attributes, topics=signup.topics,
        )  # fmt: skip
    _wait_out(started, s.signup_seconds)  # an operator's floor (NURTURE_SIGNUP_SECONDS)
    response = make_response(
        jsonify(status="ok", message=DONE) if as_json
        else page("check_inbox.html", email=signup.email)
    )  # fmt: skip
    # ...and the confirmation, or nothing, handed on once the answer has gone: built
    # during the request, a new address's email made its answer twice as slow (16 ms
    # against 7, measured), which told who was already subscribed.
    response.call_on_close(partial(state().background.send_signup, delivery_id))
    response.headers["Cache-Control"] = NO_STORE  # it names the address just given
    return response


def _form_data() -> dict[str, object]:
    """The form's fields; `topics` as the list of its checkboxes."""
    data: dict[str, object] = dict(request.form.to_dict())
    if "topics" in request.form:
        data["topics"] = request.form.getlist("topics")
    return data


def offered_topics(s: Settings) -> list[tuple[str, str]]:
    """(name, label) of the topics a signup form offers, in the order declared."""
    topics = topics_for(s.workspace)
    return [(name, topics.label(name)) for name in topics.signup]


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
def confirm_page(token: str, claim: Claim) -> ResponseReturnValue:
    return _confirm(token, claim, do_it=False)


@bp.post("/confirm/<token>")
@signed_link(Purpose.CONFIRM)
def confirm(token: str, claim: Claim) -> ResponseReturnValue:
    return _confirm(token, claim, do_it=True)


def _wait_out(started: float, floor: float) -> None:
    """Nothing to hide by default: a signup costs the same statements and the same
    enqueue for every address (nurture.people.signups); an operator who wants a margin
    on top may set one."""
    remaining = floor - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)


def _confirm(token: str, claim: Claim, *, do_it: bool) -> ResponseReturnValue:
    if do_it:
        consent = consent_info("form", form="confirmation page")
        person = confirm_by_link(settings(), claim, clock.now(), consent)
    else:
        person = link_holder(settings(), claim)
    if person is None:
        return gone()
    if person.active:
        return page("confirmed.html", email=person.email, first_name=person.first_name,
                    already=True)  # fmt: skip
    if not person.pending:
        why = ("you unsubscribed after this link was sent. To get our emails again, sign up "
               "again" if person.unsubscribed
               else "emails to this address could not be delivered")  # fmt: skip
        return error(409, "This subscription can't be confirmed", f"Sorry, {why}.")
    if not do_it:
        return page("confirm.html", email=person.email, token=token, wording=DEFAULT_WORDING)
    state().background.wake()  # the first email is due now: no need to wait for the loop
    return page("confirmed.html", email=person.email, first_name=person.first_name,
                already=False)  # fmt: skip
