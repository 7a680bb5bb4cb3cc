"""Amazon SNS messages posted over HTTP(S), verified as AWS documents before a field
of them is believed.

SNS signs the message's fields, in a fixed order that depends on its Type, with the
private key of a certificate it publishes at `SigningCertURL`: RSA with SHA1
(SignatureVersion 1) or SHA256 (2). The certificate is fetched only from an https URL
of SNS itself (`sns.<region>.amazonaws.com`, or `.amazonaws.com.cn`), whose TLS
certificate the system's authorities vouch for; no redirect is followed; it is kept
in memory by URL. A signature proves the message came from SNS, from anyone's topic:
which topics are ours is the caller's check (NURTURE_SES_TOPIC_ARNS).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.request
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: The hosts SNS publishes its certificates and subscription links on.
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")
#: Origins trusted besides SNS's own, such as "http://127.0.0.1:8123". Empty in
#: production, and no setting adds to it: the tests add the local server playing SNS.
EXTRA_ORIGINS: set[str] = set()
#: The fields SNS signs, in order, for each message Type (Subject only when present).
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}  # fmt: skip
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
#: SNS gives up retrying an HTTP(S) delivery within an hour (a hard limit of its
#: delivery policies); older is a replay. Plus a margin for clocks, both ways.
MAX_AGE = timedelta(hours=1)
CLOCK_MARGIN = timedelta(minutes=5)
FETCH_TIMEOUT = 10
#: A signing certificate is about 2 KB; a page this big is no certificate.
FETCH_LIMIT = 64 * 1024


class Rejected(Exception):
    """A message that must change nothing: the status to answer and the reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def trusted(url: str) -> bool:
    """An https URL on an SNS host, with no user, port or other trick in its authority
    (or an origin a test added to EXTRA_ORIGINS)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" in EXTRA_ORIGINS:
        return True
    host = parts.hostname or ""
    return (
        parts.scheme == "https" and parts.netloc.lower() == host and bool(SNS_HOST.fullmatch(host))
    )


def string_to_sign(message: dict[str, Any]) -> bytes:
    """`Name\\nvalue\\n` for each signed field of the message's Type, in AWS's order."""
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise Rejected(400, f"unknown SNS message type {str(message.get('Type'))[:40]!r}")
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise Rejected(400, f"the SNS message has no {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def verify(message: dict[str, Any], now: datetime) -> None:
    """Raise Rejected unless `message` is signed by SNS and recent."""
    signed = string_to_sign(message)
    algorithm = HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise Rejected(400, "unknown SNS SignatureVersion (SNS uses 1 or 2)")
    cert_url = message.get("SigningCertURL")
    if not isinstance(cert_url, str) or not trusted(cert_url) or not cert_url.endswith(".pem"):
        raise Rejected(403, "the SigningCertURL is not an https .pem URL of "
                            "sns.<region>.amazonaws.com")  # fmt: skip
    _check_age(str(message.get("Timestamp")), now)
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(401, "the SNS signature is not base64") from None
    cert = certificate(cert_url)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Rejected(401, "the SNS signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(401, "the SNS signing certificate holds no RSA key")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Rejected(401, "the SNS signature does not verify") from None


def _check_age(timestamp: str, now: datetime) -> None:
    try:
        at = datetime.fromisoformat(timestamp)
    except ValueError:
        raise Rejected(400, "the SNS Timestamp is not a time") from None
    if at.tzinfo is None:
        raise Rejected(400, "the SNS Timestamp has no time zone")
    if at > now + CLOCK_MARGIN or now - at > MAX_AGE + CLOCK_MARGIN:
        raise Rejected(401, "the SNS message is too old or from the future (a replay?)")


@lru_cache(maxsize=16)
def certificate(url: str) -> x509.Certificate:
    """The signing certificate at `url`, fetched once per process (failures are not kept)."""
    try:
        return x509.load_pem_x509_certificate(fetch(url))
    except ValueError:
        raise Rejected(401, "the SigningCertURL holds no PEM certificate") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere: the host checked is the host asked."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect())


def fetch(url: str) -> bytes:
    """GET a trusted SNS URL (a certificate, a subscription link); Rejected 502 when
    SNS cannot be reached, so that it sends the message again later."""
    if not trusted(url):
        raise Rejected(403, "not an https URL of sns.<region>.amazonaws.com")
    try:
        with _opener.open(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (checked above)
            body: bytes = response.read(FETCH_LIMIT + 1)
    except (URLError, OSError, ValueError) as e:
        raise Rejected(502, f"SNS could not be reached ({type(e).__name__})") from None
    if len(body) > FETCH_LIMIT:
        raise Rejected(502, "SNS answered with more than a certificate")
    return body
