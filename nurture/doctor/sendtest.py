"""A real email through the configured SMTP server, its DKIM signature then verified
against the published key, as a receiving server would."""

from __future__ import annotations

import dkim
import dns.resolver

from nurture.delivery.compose import sender_for
from nurture.delivery.dkim import signer_for
from nurture.delivery.mime import build_message
from nurture.delivery.transports import transport_for
from nurture.doctor.dns import dkimpy_lookup
from nurture.doctor.report import Check, failed, passed
from nurture.errors import DeliveryError, NurtureError
from nurture.settings import Settings

TEXT = "This is a test email from `nurture doctor`: it checks that mail from us is signed.\n"


def check_send(settings: Settings, resolver: dns.resolver.Resolver, to: str) -> Check:
    name = f"test email to {to}"
    if not settings.smtp_url:
        return failed(name, "NURTURE_SMTP_URL is not set", "set the SMTP server to send through")
    signer = signer_for(settings)
    if signer is None:
        return failed(name, "DKIM is off: the email would go unsigned",
                      "set NURTURE_DKIM_SELECTOR, NURTURE_DKIM_DOMAIN and NURTURE_DKIM_KEY")  # fmt: skip
    try:
        envelope = build_message(
            sender=sender_for(settings), to=to, subject="nurture doctor: test email",
            html=f"<p>{TEXT}</p>", text=TEXT, list_id="doctor", list_name="nurture doctor",
            unsubscribe_url=f"{settings.base_url}/unsubscribe/doctor-probe",
            feedback=("test", "doctor", "test"), signer=signer,
        )  # fmt: skip
        transport = transport_for(settings.smtp_url, settings.outbox)
        transport.send(envelope)
    except (DeliveryError, NurtureError) as e:
        return failed(name, f"not sent: {e}", "check NURTURE_SMTP_URL")
    if not dkim.verify(envelope.data, dnsfunc=dkimpy_lookup(resolver)):
        return failed(name, f"sent {envelope.message_id}, but its DKIM signature does not verify "
                      "against the published key", "publish the key's record (see DKIM above)")  # fmt: skip
    return passed(name, f"sent {envelope.message_id}; its DKIM signature verifies")
