"""The three DNS records a provider reads before it trusts a sender: SPF for the envelope
domain, the DKIM key at selector._domainkey.domain, and DMARC for the From domain."""

from __future__ import annotations

import dns.resolver

from nurture.delivery.dkim import record_matches
from nurture.doctor.dns import DnsError, txt
from nurture.doctor.report import Check, failed, passed, warned
from nurture.sender import aligned, sender_domain
from nurture.settings import Settings

#: SPF terms that authorise a server; a record of only `all` authorises none.
_AUTHORISING = ("include:", "a", "mx", "ip4:", "ip6:", "exists:", "redirect=", "ptr")


def envelope_domain(settings: Settings) -> str:
    """The domain of the Return-Path: the bounce address when one is set, else From."""
    bounce = getattr(settings, "bounce_address", None)
    return sender_domain(bounce or settings.sender or "")


def check_spf(settings: Settings, resolver: dns.resolver.Resolver) -> Check:
    name = "SPF"
    domain = envelope_domain(settings)
    if not domain:
        return failed(name, "no sender is set", "set NURTURE_FROM")
    try:
        records = [r for r in txt(resolver, domain) if r.lower().startswith(b"v=spf1")]
    except DnsError as e:
        return failed(name, str(e), "check the DNS server (NURTURE_DNS_SERVER) and try again")
    publish = f'publish {domain} TXT "v=spf1 include:<your provider\'s SPF domain> ~all"'
    if not records:
        return failed(name, f"no SPF record at {domain}", publish)
    if len(records) > 1:
        return failed(name, f"{len(records)} SPF records at {domain} (a permanent error)",
                      "merge them into one v=spf1 record")  # fmt: skip
    terms = records[0].decode(errors="replace").split()[1:]
    bare = [t.lstrip("+-~?").lower() for t in terms]
    if "all" in [t.lower() for t in terms] or "+all" in terms:
        return failed(name, f"{domain}'s SPF record lets any server send as it (+all)",
                      "end the record with ~all or -all")  # fmt: skip
    if not any(t == a or t.startswith(a) for t in bare for a in _AUTHORISING):
        return failed(name, f"{domain}'s SPF record authorises no server: {records[0].decode()}",
                      publish)  # fmt: skip
    return passed(name, f"{domain}: {records[0].decode()}")


def check_dkim(settings: Settings, resolver: dns.resolver.Resolver) -> Check:
    name = "DKIM"
    if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_key):
        return failed(name, "emails are not signed (DKIM is off)",
                      "run `nurture dkim keygen`, publish the record it prints and set "
                      "NURTURE_DKIM_SELECTOR, NURTURE_DKIM_DOMAIN and NURTURE_DKIM_KEY")  # fmt: skip
    where = f"{settings.dkim_selector}._domainkey.{settings.dkim_domain}"
    try:
        records = txt(resolver, where)
    except DnsError as e:
        return failed(name, str(e), "check the DNS server (NURTURE_DNS_SERVER) and try again")
    fix = f"publish at {where} the TXT record `nurture dkim keygen` printed for this key"
    if not records:
        return failed(name, f"no DKIM record at {where}", fix)
    problem = record_matches(settings, records[0])
    if problem:
        return failed(name, f"{where}: {problem}", fix)
    return passed(name, f"{where} publishes the key in {settings.dkim_key}")


def _dmarc(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, bytes] | None:
    """The DMARC record for `domain`, or for its parent (a receiver falls back to the
    organisational domain; the public suffix list is not consulted)."""
    labels = domain.split(".")
    for candidate in dict.fromkeys([domain, ".".join(labels[-2:])]):
        found = [r for r in txt(resolver, f"_dmarc.{candidate}") if r.startswith(b"v=DMARC1")]
        if found:
            return candidate, found[0]
    return None


def check_dmarc(settings: Settings, resolver: dns.resolver.Resolver) -> Check:
    name = "DMARC"
    domain = sender_domain(settings.sender or "")
    if not domain:
        return failed(name, "no sender is set", "set NURTURE_FROM")
    try:
        found = _dmarc(resolver, domain)
    except DnsError as e:
        return failed(name, str(e), "check the DNS server (NURTURE_DNS_SERVER) and try again")
    if found is None:
        return failed(name, f"no DMARC record at _dmarc.{domain}",
                      f'publish _dmarc.{domain} TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"')  # fmt: skip
    where, record = found
    tags = {k.strip().lower(): v.strip() for k, _, v in
            (t.partition("=") for t in record.decode(errors="replace").split(";")) if k.strip()}  # fmt: skip
    if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        return failed(name, f"_dmarc.{where} has no valid policy (p=none, quarantine or reject)",
                      "add p=none to start with")  # fmt: skip
    strict_dkim, strict_spf = tags.get("adkim") == "s", tags.get("aspf") == "s"
    d = settings.dkim_domain or ""
    spf = envelope_domain(settings)
    dkim_ok = bool(d) and (d == domain if strict_dkim else aligned(d, domain))
    spf_ok = spf == domain if strict_spf else aligned(spf, domain)
    if not (dkim_ok or spf_ok):
        return failed(name, f"neither DKIM d={d or '(none)'} nor the envelope domain {spf} "
                      f"aligns with From {domain}",
                      f"sign with NURTURE_DKIM_DOMAIN={domain}")  # fmt: skip
    how = " and ".join(n for n, ok in (("DKIM", dkim_ok), ("SPF", spf_ok)) if ok)
    if not dkim_ok:
        return warned(name, f"_dmarc.{where} p={tags['p']}; aligned through SPF only",
                      f"sign with NURTURE_DKIM_DOMAIN={domain} so a forward keeps DMARC")  # fmt: skip
    return passed(name, f"_dmarc.{where} p={tags['p']}; aligned through {how}")
