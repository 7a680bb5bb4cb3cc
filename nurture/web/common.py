"""What every blueprint needs: the app's settings, who is asking, and clear error answers.

The app's one source of settings is the `Settings` object in `app.config[SETTINGS]`:
every limit and time a view applies is read from it on each request, so a test that
puts changed settings there changes the app.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue

from nurture.content.sequences import Catalog, catalog_for
from nurture.errors import TokenError
from nurture.people.subscribers import DEFAULT_WORDING, ConsentInfo
from nurture.settings import Settings
from nurture.tokens import Claim, Purpose, read_claim
from nurture.web.background import Background
from nurture.web.throttle import Throttle

#: The key of the app's `Settings` in `app.config`.
SETTINGS = "NURTURE_SETTINGS"
#: Pages may load only our own stylesheet and script, and be framed by nobody.
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


@dataclass(frozen=True)
class Nurture:
    """What `create_app` keeps in `app.extensions["nurture"]`: the app's workers."""

    background: Background
    throttle: Throttle


def state() -> Nurture:
    return current_app.extensions["nurture"]  # type: ignore[no-any-return]


def settings() -> Settings:
    return current_app.config[SETTINGS]  # type: ignore[no-any-return]


def catalog() -> Catalog:
    return catalog_for(settings().sequences_dir)


def brand(s: Settings) -> str:
    """The name pages show: the sender's display name, else the site's host."""
    name, _ = parseaddr(s.sender or "")
    return name or urlsplit(s.base_url).hostname or "nurture"


def consent_info(
    source: str, form: str | None = None, wording: str | None = DEFAULT_WORDING
) -> ConsentInfo:
    """Where a consent came from, for the ledger: client address, browser, form, wording."""
    return ConsentInfo(
        source=source,
        ip=(request.remote_addr or "")[:64] or None,
        user_agent=request.user_agent.string or None,
        form=(form or request.referrer or request.path)[:200],
        wording=wording,
    )


#: The WSGI environ key where the app notes the route of a request whose path holds a
#: personal token (`/confirm/<token>`), so the access log shows that and not the path.
TOKEN_ROUTE = "nurture.token_route"  # noqa: S105 - an environ key, not a secret

#: Pages reached by a personal link must not be kept by a browser or a proxy.
NO_STORE = "no-store, no-cache, must-revalidate, private"
TOO_MANY = "Too many requests from your address. Please wait a minute and try again."


def too_many(seconds: int) -> ResponseReturnValue:
    response = make_response(error(429, "Too many requests", TOO_MANY))
    response.headers["Retry-After"] = str(seconds)
    return response


def throttle_link(token: str) -> int:
    """Count one use of a personal link: 0 when allowed, else the seconds to wait.

    Per token, so one forwarded email cannot be replayed without end; per client too,
    except a mail provider's RFC 8058 one-click unsubscribe, which comes from its own
    few addresses for all its users and must never be refused for their number.
    """
    limits, throttle = settings(), state().throttle
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    wait = throttle.hit(limits.token_limit, "token", digest)
    one_click = request.method == "POST" and request.form.get("List-Unsubscribe") == "One-Click"
    if wait or one_click:
        return wait
    return throttle.hit(limits.link_limit, request.remote_addr or "", "link")


def wants_json() -> bool:
    if request.is_json or request.path.startswith("/api/") or request.path == "/healthz":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > 0


def page(template: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(template, **context), status


def error(status: int, title: str, message: str, **extra: Any) -> ResponseReturnValue:
    """A clear refusal: JSON for API and JSON callers, a page for people."""
    if wants_json():
        return jsonify(error=message, **extra), status
    return page("error.html", status, title=title, message=message)


BROKEN_LINK = "This link doesn't work"


def bad_token(reason: str) -> ResponseReturnValue:
    return error(
        400,
        BROKEN_LINK,
        f"Sorry, {reason}. Copy the whole link from the email, or sign up again "
        "if it is an old confirmation link.",
    )


def gone() -> ResponseReturnValue:
    """A valid link whose subscriber was forgotten since."""
    return error(400, BROKEN_LINK, "Sorry, this subscription no longer exists. "
                 "You are welcome to sign up again.")  # fmt: skip


TokenView = Callable[[str, Claim], ResponseReturnValue]


def signed_link(purpose: Purpose) -> Callable[[TokenView], Callable[[str], ResponseReturnValue]]:
    """For views of a signed link: they get (token, claim), after the link's own limits
    (Settings.link_limit per client, token_limit per token) and its signature were
    checked; a tampered, foreign-purpose or expired token gets a 400 page first."""

    def decorate(view: TokenView) -> Callable[[str], ResponseReturnValue]:
        @wraps(view)
        def checked(token: str) -> ResponseReturnValue:
            response = make_response(_answer(token))
            response.headers["Cache-Control"] = NO_STORE
            return response

        def _answer(token: str) -> ResponseReturnValue:
            wait = throttle_link(token)
            if wait:
                return too_many(wait)
            try:
                claim = read_claim(settings().secret_key, purpose, token)
            except TokenError as e:
                return bad_token(str(e))
            return view(token, claim)

        return checked

    return decorate
