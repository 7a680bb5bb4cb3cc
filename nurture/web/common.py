"""What every blueprint needs: the app's settings, who is asking, and clear error answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from nurture.errors import TokenError
from nurture.sequences import Catalog, catalog_for
from nurture.settings import Settings
from nurture.subscribers import DEFAULT_WORDING, ConsentInfo
from nurture.tokens import Purpose, read_token
from nurture.web.background import Background
from nurture.web.throttle import Throttle


@dataclass(frozen=True)
class Nurture:
    """What `create_app` keeps in `app.extensions["nurture"]`."""

    settings: Settings
    background: Background
    throttle: Throttle


def state() -> Nurture:
    return current_app.extensions["nurture"]  # type: ignore[no-any-return]


def settings() -> Settings:
    return state().settings


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


def subscriber_token(purpose: Purpose, token: str) -> tuple[int, str | None]:
    """(subscriber id, sequence or None) from a confirm or unsubscribe token."""
    payload = read_token(settings().secret_key, purpose, token)
    try:
        sequence = payload.get("q")
        return int(payload["s"]), None if sequence is None else str(sequence)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise TokenError("this link is not valid") from None


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


TokenView = Callable[[str, int, str | None], ResponseReturnValue]


def signed_link(purpose: Purpose) -> Callable[[TokenView], Callable[[str], ResponseReturnValue]]:
    """For views of a signed link: they get (token, subscriber id, sequence), and a
    tampered, foreign-purpose or expired token gets a 400 page before they run."""

    def decorate(view: TokenView) -> Callable[[str], ResponseReturnValue]:
        @wraps(view)
        def checked(token: str) -> ResponseReturnValue:
            try:
                subscriber_id, sequence = subscriber_token(purpose, token)
            except TokenError as e:
                return bad_token(str(e))
            return view(token, subscriber_id, sequence)

        return checked

    return decorate
