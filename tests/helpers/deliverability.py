"""A real DNS server (dnslib, UDP on 127.0.0.1) serving the TXT records a test gives it,
and a real HTTPS server (werkzeug, a self-signed certificate) for the web side."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from werkzeug.serving import make_server

from nurture.delivery.dkim import NewKey


class Zone(BaseResolver):
    """TXT records by name; each record a list of strings, as a zone file splits them."""

    def __init__(self, records: dict[str, list[list[str]]]):
        self.records = {name.lower().rstrip("."): value for name, value in records.items()}

    def resolve(self, request, handler):  # noqa: ARG002 - dnslib's signature
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for strings in self.records[name]:
                rdata = TXT([s.encode() for s in strings])
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=rdata, ttl=60))
        return reply


class LocalDns:
    def __init__(self, records: dict[str, list[list[str]]]):
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.zone = Zone(records)
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=quiet)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server.server_address[1]}"

    def __enter__(self) -> LocalDns:
        self.server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.server.server.server_close()


def dkim_strings(key: NewKey) -> list[str]:
    """The record as `dkim keygen` prints it, split into its quoted strings."""
    return key.record.split("( ", 1)[1].rsplit(" )", 1)[0].strip('"').split('" "')


def good_records(domain: str, key: NewKey) -> dict[str, list[list[str]]]:
    return {
        domain: [["v=spf1 ip4:127.0.0.1 -all"], ["google-site-verification=abc"]],
        key.txt_name: [dkim_strings(key)],
        f"_dmarc.{domain}": [["v=DMARC1; p=reject; rua=mailto:dmarc@" + domain]],
    }


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class HttpsApp:
    """A WSGI app served over TLS in a thread."""

    def __init__(self, app, cert: Path, key: Path):
        self.server = make_server("127.0.0.1", 0, app, threaded=True,
                                  ssl_context=(str(cert), str(key)))  # fmt: skip
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.server.server_port}"

    def __enter__(self) -> HttpsApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
