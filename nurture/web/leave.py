"""Leaving, and coming back: the unsubscribe page, RFC 8058 one-click, resubscribing.

`POST /unsubscribe/<token>` is also the target of the `List-Unsubscribe-Post` header:
mail providers post `List-Unsubscribe=One-Click` with no cookie and follow no
redirect, so it answers 200 with a page, and needs nothing but the signed token.
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from nurture import clock
from nurture.people.events import last_sent_delivery, record
from nurture.people.subscribers import resubscribe, unsubscribe
from nurture.store.engine import session_scope
from nurture.store.tables import SubscriberStatus
from nurture.tokens import Claim, Purpose
from nurture.web.common import (
    consent_info,
    error,
    gone,
    holder,
    page,
    settings,
    signed_link,
    state,
)

bp = Blueprint("leave", __name__)
_GONE = {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED}


@bp.get("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_page(token: str, claim: Claim) -> ResponseReturnValue:
    with session_scope(settings()) as session:
        sub = holder(session, claim)
        if sub is None:
            return gone()
        email, status, sequence = sub.email, sub.status, claim.sequence
    if status in _GONE:
        return page("unsubscribed.html", email=email, token=token, sequence=None,
                    can_resubscribe=status == SubscriberStatus.UNSUBSCRIBED, already=True)  # fmt: skip
    return page("unsubscribe.html", email=email, token=token, sequence=sequence)


@bp.post("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_now(token: str, claim: Claim) -> ResponseReturnValue:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    # One-click, and any post that does not ask for less, leaves everything: a person who
    # presses "unsubscribe" in their mail app expects to hear nothing more from us.
    sequence = claim.sequence
    only = sequence if request.form.get("scope") == "sequence" and not one_click else None
    now = clock.now()
    with session_scope(settings()) as session:
        sub = holder(session, claim)
        if sub is None:
            return gone()
        email, status = sub.email, sub.status
        if status not in _GONE:
            unsubscribe(session, sub, now, sequence=only, consent=consent_info(
                "web", form="one-click" if one_click else "unsubscribe page", wording=None))  # fmt: skip
            record(session, sub.id, "unsubscribe", now,
                   delivery_id=last_sent_delivery(session, sub.id, sequence),
                   data={"sequence": only, "one_click": one_click})  # fmt: skip
            status = sub.status
    return page("unsubscribed.html", email=email, token=token, sequence=only, already=False,
                can_resubscribe=status == SubscriberStatus.UNSUBSCRIBED)  # fmt: skip


@bp.post("/resubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def resubscribe_now(token: str, claim: Claim) -> ResponseReturnValue:
    """Coming back starts a fresh double opt-in: a new confirmation email, at most one
    an hour per address like every other path (a forwarded email must not be able to
    flood its owner by unsubscribing and resubscribing in turn)."""
    with session_scope(settings()) as session:
        sub = holder(session, claim)
        if sub is None:
            return gone()
        email, status, first_name = sub.email, sub.status, sub.first_name
        delivery_id = resubscribe(session, sub, clock.now(),
                                  consent_info("web", form="resubscribe button"))  # fmt: skip
    if status == SubscriberStatus.ACTIVE:
        return page("confirmed.html", email=email, first_name=first_name, already=True)
    if status == SubscriberStatus.BOUNCED:
        return error(409, "We can't resubscribe this address",
                     "Sorry, emails to this address could not be delivered.")  # fmt: skip
    state().background.send([delivery_id])
    return page("check_inbox.html", email=email)
