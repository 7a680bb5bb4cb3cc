"""Leaving, and coming back: the unsubscribe page, RFC 8058 one-click, resubscribing.

With topics declared (nurture.content.topics) the unsubscribe page is a preference
centre: the reader's topics as checkboxes, leaving the email's own topic, a pause of
30 or 90 days, leaving everything, and an optional reason. It is one plain form whose
buttons say what to do, so it works without JavaScript; like every personal link it
needs nothing but the signed token in its address, which a cross-site form cannot know.

`POST /unsubscribe/<token>` is also the target of the `List-Unsubscribe-Post` header:
mail providers post `List-Unsubscribe=One-Click` with no cookie and follow no
redirect, so it answers 200 with a page, and needs nothing but the signed token. It
leaves everything at once, whatever else the form says. With topics on, a form post
that names no action (and is not one-click) changes nothing and shows the page again.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from nurture import clock
from nurture.content.topics import topics_for
from nurture.people.centre import ACTIONS, Centre, Choice, Done, centre_by_link, choose_by_link
from nurture.people.links import link_holder, resubscribe_by_link, unsubscribe_by_link
from nurture.people.preferences import PAUSE_DAYS, REASON_TEXT_MAX, REASONS, Reason
from nurture.tokens import Claim, Purpose
from nurture.web.common import consent_info, error, gone, page, settings, signed_link, state

bp = Blueprint("leave", __name__)
#: The pauses a form may ask for, as the form writes them (`pause:30`): compared as text,
#: so `²` or five thousand digits are refused before any `int()`.
_PAUSES = frozenset(str(d) for d in PAUSE_DAYS)
_PAUSES_SAID = " or ".join(str(d) for d in PAUSE_DAYS)


@bp.get("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_page(token: str, claim: Claim) -> ResponseReturnValue:
    person = link_holder(settings(), claim)
    if person is None:
        return gone()
    if person.gone:
        return page("unsubscribed.html", email=person.email, token=token, sequence=None,
                    can_resubscribe=person.unsubscribed, already=True)  # fmt: skip
    if topics_for(settings().workspace).on:
        centre = centre_by_link(settings(), claim)
        return gone() if centre is None else _centre_page(token, centre)
    return page("unsubscribe.html", email=person.email, token=token, sequence=claim.sequence)


@bp.post("/unsubscribe/<token>")
@signed_link(Purpose.UNSUBSCRIBE)
def unsubscribe_now(token: str, claim: Claim) -> ResponseReturnValue:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    reason = Reason.given(request.form.get("reason"), request.form.get("reason_text"))
    action, _, days = request.form.get("action", "").partition(":")
    if not one_click and topics_for(settings().workspace).on:
        if action in ACTIONS:
            if action == "pause" and days not in _PAUSES:
                return error(400, "Unknown pause", f"A pause lasts {_PAUSES_SAID} days.")
            return _choose(token, claim, Choice(action, tuple(request.form.getlist("topic")),
                                                int(days) if action == "pause" else 0, reason))  # fmt: skip
        if action != "leave-all" and "scope" not in request.form:
            return _nothing_asked(token, claim)
    # One-click, leave-all, and the topics-off page's buttons leave everything: a person
    # who presses "unsubscribe" in their mail app expects to hear nothing more from us.
    only = claim.sequence if request.form.get("scope") == "sequence" and not one_click else None
    consent = consent_info("web", form="one-click" if one_click else "unsubscribe page",
                           wording=None)  # fmt: skip
    person = unsubscribe_by_link(settings(), claim, clock.now(), consent, only=only,
                                 one_click=one_click, reason=reason)  # fmt: skip
    if person is None:
        return gone()
    return page("unsubscribed.html", email=person.email, token=token, sequence=only,
                already=False, can_resubscribe=person.unsubscribed)  # fmt: skip


def _nothing_asked(token: str, claim: Claim) -> ResponseReturnValue:
    """A form post that names no choice (no action, not one-click) shows the page again
    and changes nothing: leaving everything is asked for, never assumed."""
    centre = centre_by_link(settings(), claim)
    if centre is None:
        return gone()
    if centre.holder.gone:
        return page("unsubscribed.html", email=centre.holder.email, token=token, sequence=None,
                    can_resubscribe=centre.holder.unsubscribed, already=True)  # fmt: skip
    return _centre_page(token, centre, "Nothing changed: choose one of the options below.")


def _choose(token: str, claim: Claim, choice: Choice) -> ResponseReturnValue:
    consent = consent_info("web", form="preference centre", wording=None)
    found = choose_by_link(settings(), claim, clock.now(), consent, choice)
    if found is None:
        return gone()
    centre, done = found
    if centre.holder.gone:
        return page("unsubscribed.html", email=centre.holder.email, token=token, sequence=None,
                    can_resubscribe=centre.holder.unsubscribed, already=not done.everything)  # fmt: skip
    return _centre_page(token, centre, _notice(centre, done, choice))


def _centre_page(token: str, centre: Centre, notice: str | None = None) -> ResponseReturnValue:
    return page("preferences.html", token=token, centre=centre, notice=notice, day=day,
                reasons=REASONS, pauses=PAUSE_DAYS, reason_max=REASON_TEXT_MAX)  # fmt: skip


def _notice(centre: Centre, done: Done, choice: Choice) -> str:
    """One sentence saying what the choice changed."""
    labels = {t.name: t.label for t in centre.topics}
    said = []
    if done.left:
        said.append(f"You won't get {_listed(labels, done.left, 'or')} any more.")
    if done.joined:
        said.append(f"Welcome back to {_listed(labels, done.joined, 'and')}.")
    if done.paused_until:
        said.append(f"Paused: nothing from us until {day(done.paused_until)}.")
    if done.resumed:
        said.append("Your emails have resumed.")
    if not said:
        said.append("Thank you for telling us why." if choice.reason != Reason()
                    else "Nothing changed.")  # fmt: skip
    return " ".join(said)


def _listed(labels: dict[str, str], names: list[str], joiner: str) -> str:
    shown = [f"“{labels.get(n, n)}”" for n in names]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {joiner} {shown[-1]}"


def day(at: datetime) -> str:
    """A date as a reader reads it: 1 March 2027."""
    return f"{at.day} {at:%B %Y}"


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
