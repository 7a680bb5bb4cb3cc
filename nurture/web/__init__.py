"""The web app: signup form, confirmation, unsubscribe, tracking, events API, health.

`create_app()` is the WSGI app for any server (`gunicorn 'nurture.web:create_app()'`);
`nurture serve` runs it under gunicorn and, in embedded mode, also sends what is due.
Views parse the request, call the domain functions and render a page; no SQL here.
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from nurture.people.signups import request_counts
from nurture.settings import Settings, load_settings
from nurture.web import api, archive, leave, signup, track, webhooks
from nurture.web.background import Background
from nurture.web.common import CSP, SETTINGS, TOKEN_ROUTE, Nurture, brand, error
from nurture.web.throttle import Throttle

log = logging.getLogger(__name__)

#: Largest request body read; a signup needs a few hundred bytes.
MAX_BODY = 64 * 1024
_MESSAGES = {
    400: "The request could not be understood.",
    404: "There is nothing at this address.",
    405: "This address does not take that kind of request.",
    413: "That is far more data than this form takes.",
    429: "Too many requests from your address. Please wait a minute and try again.",
}


def create_app(settings: Settings | None = None, *, proxies: int = 0) -> Flask:
    """The app for `settings`, or for the environment (NURTURE_*) when None.

    `proxies`: how many reverse proxies stand in front and set X-Forwarded-For. Only
    then is that header believed, for rate limits and the consent ledger's address;
    believed without a proxy, anyone could pick the address they are counted under.
    """
    settings = settings or load_settings()
    for warning in settings.warnings + settings.toml_problems:
        log.warning("%s", warning)
    app = Flask(__name__)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    app.config.update({"MAX_CONTENT_LENGTH": MAX_BODY, SETTINGS: settings})
    app.extensions["nurture"] = Nurture(
        Background(settings), Throttle(settings.redis_url, request_counts(settings))
    )
    for bp in (signup.bp, leave.bp, track.bp, api.bp, archive.bp, webhooks.bp):
        app.register_blueprint(bp)

    page_context: dict[str, object] = {
        "brand": brand(settings),
        "postal_address": settings.postal_address,
    }

    @app.context_processor
    def _page_context() -> dict[str, object]:
        return page_context

    @app.url_value_preprocessor
    def _note_token_route(endpoint: str | None, values: dict[str, object] | None) -> None:
        # However the path was spelled (`//confirm/…`, `/%63onfirm/…`), the route it
        # matched is what the access log shows (server.AccessLog).
        if values and "token" in values and request.url_rule is not None:
            request.environ[TOKEN_ROUTE] = request.url_rule.rule

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")  # tokens stay ours
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> ResponseReturnValue:
        code = e.code or 500
        return error(code, e.name, _MESSAGES.get(code, e.description or e.name))

    @app.errorhandler(Exception)
    def _crash(e: Exception) -> ResponseReturnValue:
        # The route, not the path: a path can hold someone's token.
        route = request.url_rule.rule if request.url_rule else request.path
        log.exception("%s %s failed", request.method, route)
        return error(500, "Something went wrong", "Sorry, something went wrong on our side. "
                     "Please try again in a moment.")  # fmt: skip

    return app
