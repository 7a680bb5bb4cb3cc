"""Whether the bounces and complaints that arrive after the send have a way in."""

from __future__ import annotations

from nurture.delivery.bounces.webhooks import webhooks_on
from nurture.doctor.report import Check, failed, passed, warned
from nurture.errors import ConfigError
from nurture.mailsettings import sendgrid_verification_key
from nurture.settings import Settings

NAME = "bounce intake"


def check_intake(settings: Settings) -> Check:
    """Behind a relay almost every bounce and complaint arrives later: with no way in,
    bad addresses stay on the list and complaints go unheard."""
    if settings.sendgrid_webhook_key is not None:
        try:
            sendgrid_verification_key(settings.sendgrid_webhook_key)
        except ConfigError as e:
            return failed(NAME, str(e), "paste the Verification Key of SendGrid's signed "
                          "event webhook into NURTURE_SENDGRID_WEBHOOK_KEY")  # fmt: skip
    ways = []
    if settings.bounce_address:
        ways.append(f"bounces to {settings.bounce_address} (VERP)")
    if settings.bounce_imap_url:
        ways.append("an IMAP mailbox for `nurture bounces fetch`")
    ways += [f"POST /webhooks/{provider}" for provider in webhooks_on(settings)]
    if not ways:
        return warned(NAME, "nothing reads the bounces and complaints that arrive after the "
                      "send", "set NURTURE_BOUNCE_ADDRESS (for a pipe or `nurture bounces "
                      "fetch`) or your provider's webhook: see docs/deliverability.md")  # fmt: skip
    return passed(NAME, ", ".join(ways))
