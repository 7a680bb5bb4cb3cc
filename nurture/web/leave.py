"""Leaving, and coming back: the unsubscribe page, RFC 8058 one-click, resubscribing.

`POST /unsubscribe/<token>` is also the target of the `List-Unsubscribe-Post` header:
mail providers post `List-Unsubscribe=One-Click` with no cookie and follow no
redirect, so it answers 200 with a page, and needs nothing but the signed token.
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from nurture import clock
from nurture.people.links import link_holder, resubscribe_by_link, unsubscribe_by_link
from nurture.tokens import Claim, Purpose
from nurture.web.common import consent_info, error, gone, page, settings, signed_link, state

bp = Blueprint("leave", __name__)


@bp.get("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_page(token: str, claim: Claim) -> ResponseReturnValue:
    person = link_holder(settings(), claim)
    if person is None:
        return gone()
    if person.gone:
        return page("unsubscribed.html", email=person.email, token=token, sequence=None,
                    can_resubscribe=person.unsubscribed, already=True)  # fmt: skip
    return page("unsubscribe.html", email=person.email, token=token, sequence=claim.sequence)


@bp.post("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_now(token: str, claim: Claim) -> ResponseReturnValue:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    # One-click, and any post that does not ask for less, leaves everything: a person who
    # presses "unsubscribe" in their mail app expects to hear nothing more from us.
    only = claim.sequence if request.form.get("scope") == "sequence" and not one_click else None
    consent = consent_info("web", form="one-click" if one_click else "unsubscribe page",
                           wording=None)  # fmt: skip
    person = unsubscribe_by_link(settings(), claim, clock.now(), consent, only=only,
                                 one_click=one_click)  # fmt: skip
    if person is None:
        return gone()
    return page("unsubscribed.html", email=person.email, token=token, sequence=only,
                already=False, can_resubscribe=person.unsubscribed)  # fmt: skip


@bp.post("/resubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def resubscribe_now(token: str, claim: Claim) -> ResponseReturnValue:
    """Coming back starts a fresh double opt-in: a new confirmation email, at most one
    an hour per address like every other path (a forwarded email must not be able to
    flood its owner by unsubscribing and resubscribing in turn)."""
    consent = consent_info("web", form="resubscribe button")
    found = resubscribe_by_link(settings(), claim, clock.now(), consent)
    if found is None:
        return gone()
    person, delivery_id = found
    if person.active:
        return page("confirmed.html", email=person.email, first_name=person.first_name,
                    already=True)  # fmt: skip
    if person.bounced:
        return error(409, "We can't resubscribe this address",
                     "Sorry, emails to this address could not be delivered.")  # fmt: skip
    state().background.send([delivery_id])
    return page("check_inbox.html", email=person.email)
