"""TXT look-ups through dnspython, at the system resolver or at NURTURE_DNS_SERVER
("host:port", an IP address), so a test or a split-horizon set-up can name its server."""

from __future__ import annotations

from collections.abc import Callable

import dns.exception
import dns.resolver

from nurture.errors import ConfigError
from nurture.settings import Settings

#: Seconds a look-up may take before the record counts as unreachable.
LIFETIME = 5.0


class DnsError(Exception):
    """The DNS server did not answer: nothing can be said about the record."""


def resolver_for(settings: Settings) -> dns.resolver.Resolver:
    server = settings.dns_server
    if not server:
        resolver = dns.resolver.Resolver()
    else:
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        resolver = dns.resolver.Resolver(configure=False)
        try:
            resolver.nameservers = [host or server]
            resolver.port = int(port or 53)
        except ValueError:
            raise ConfigError(
                f"NURTURE_DNS_SERVER must be an IP address and port such as 127.0.0.1:53, "
                f"got {server!r}"
            ) from None
    resolver.lifetime = LIFETIME
    return resolver


def txt(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """Every TXT record at `name`, each one's strings joined as RFC 7208 says; [] when
    there is none."""
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
        raise DnsError(f"no answer for {name}: {e}") from None
    return [b"".join(rdata.strings) for rdata in answer]


def dkimpy_lookup(resolver: dns.resolver.Resolver) -> Callable[..., bytes | None]:
    """A `dnsfunc` for dkim.verify that asks this resolver."""

    def lookup(name: bytes | str, timeout: float = LIFETIME) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        found = txt(resolver, text.rstrip("."))
        return found[0] if found else None

    return lookup
