"""Bounce and complaint webhooks of email providers: POST /webhooks/<provider>.
Verification and handling live in nurture.delivery.bounces.webhooks."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from nurture.delivery.bounces.webhooks import handle_webhook
from nurture.web.common import settings

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/<provider>")
def provider_webhook(provider: str) -> ResponseReturnValue:
    answer = handle_webhook(settings(), provider, request.get_data(), dict(request.headers),
                            request.args.to_dict())  # fmt: skip
    key = "outcome" if answer.status < 400 else "error"
    return jsonify({key: answer.message}), answer.status
