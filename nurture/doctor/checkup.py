"""Every check of `nurture doctor`, in the order a provider meets them."""

from __future__ import annotations

from nurture.doctor.dns import resolver_for
from nurture.doctor.endpoints import check_base_url, check_postal_address
from nurture.doctor.intake import check_intake
from nurture.doctor.rates import check_rates
from nurture.doctor.records import check_dkim, check_dmarc, check_spf
from nurture.doctor.report import Check
from nurture.doctor.samples import check_samples
from nurture.doctor.sendtest import check_send
from nurture.settings import Settings


def run_doctor(settings: Settings, send_to: str | None = None) -> list[Check]:
    resolver = resolver_for(settings)
    checks = [
        check_spf(settings, resolver),
        check_dkim(settings, resolver),
        check_dmarc(settings, resolver),
        check_base_url(settings),
        check_postal_address(settings),
        check_samples(settings),
        check_rates(settings),
        check_intake(settings),
    ]
    if send_to:
        checks.append(check_send(settings, resolver, send_to))
    return checks
