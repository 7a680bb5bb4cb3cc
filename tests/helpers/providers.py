"""Plays Amazon SNS and SendGrid for the webhook tests: keys and a certificate made
here, a local HTTP server that publishes the certificate and records subscription
confirmations, and messages signed the way each provider documents (written out
again here, not borrowed from nurture, so that a mistake in one shows in the other)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.helpers.linkserver import LocalServer

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_pem(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed certificate for `key`, valid from yesterday for a year."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


class FakeSns(LocalServer):
    """A local server publishing a signing certificate at `cert_url`; it records the
    paths GET asks for (the certificate, subscription confirmations)."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self.key = key or rsa_key()
        pem = certificate_pem(self.key)
        self.gets: list[str] = []
        gets = self.gets

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                gets.append(self.path)
                body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.origin = self.url
        # a fresh name per server: nurture keeps certificates by URL
        self.cert_url = f"{self.origin}/SimpleNotificationService-{uuid.uuid4().hex}.pem"

    def message(self, kind: str, body: str, *, topic: str = TOPIC, version: str = "1",
                at: datetime | None = None, **fields: str) -> dict[str, Any]:  # fmt: skip
        """An SNS message of Type `kind`, signed; `fields` override any field before
        signing (SigningCertURL, SubscribeURL, …)."""
        message = {
            "Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": body,
            "Timestamp": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "SignatureVersion": version, "SigningCertURL": self.cert_url,
        }  # fmt: skip
        if kind != "Notification":
            token = uuid.uuid4().hex * 2
            message["Token"] = token
            message["SubscribeURL"] = (f"{self.origin}/?Action=ConfirmSubscription"
                                       f"&TopicArn={topic}&Token={token}")  # fmt: skip
        message.update(fields)
        return signed(message, self.key)


def signed(message: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """`message` with its Signature made by `key` (SHA1 for SignatureVersion 1, else SHA256)."""
    # SignatureVersion 1 is SHA1 by AWS's definition
    algorithm = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()  # noqa: S303
    signature = key.sign(_string_to_sign(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def _string_to_sign(m: dict[str, Any]) -> bytes:
    """AWS's recipe: for a Notification Message, MessageId, Subject (if any), Timestamp,
    TopicArn, Type; for the confirmations Message, MessageId, SubscribeURL, Timestamp,
    Token, TopicArn, Type; each as its name, a newline, its value, a newline."""
    if m["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{m[n]}\n" for n in names if n in m).encode()


def ses_bounce(address: str, message_id: str, source: str, bounce_type: str = "Permanent",
               sub_type: str = "General") -> str:  # fmt: skip
    """SES's Bounce notification (the shape of AWS's example, with a DSN's fields)."""
    return json.dumps({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type, "bounceSubType": sub_type,
            "bouncedRecipients": [{"emailAddress": address, "action": "failed",
                                   "status": "5.1.1" if bounce_type == "Permanent" else "4.2.2",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-11-02T09:00:00.000Z", "feedbackId": uuid.uuid4().hex,
            "reportingMTA": "dsn; a27-30.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": _mail(address, message_id, source),
    })  # fmt: skip


def ses_complaint(address: str, message_id: str, source: str, feedback: str = "abuse") -> str:
    return json.dumps({
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": feedback, "arrivalDate": "2026-11-02T09:05:00.000Z",
            "timestamp": "2026-11-02T09:05:01.000Z", "feedbackId": uuid.uuid4().hex,
        },
        "mail": _mail(address, message_id, source),
    })  # fmt: skip


def _mail(address: str, message_id: str, source: str) -> dict[str, Any]:
    return {
        "timestamp": "2026-11-02T08:59:00.000Z", "source": source,
        "messageId": "0102018c" + uuid.uuid4().hex, "destination": [address],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "hello@crumb.example"},
                    {"name": "To", "value": address},
                    {"name": "Message-ID", "value": message_id}],
        "commonHeaders": {"from": ["hello@crumb.example"], "to": [address],
                          "messageId": message_id, "subject": "Welcome"},
    }  # fmt: skip


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ec_public_base64(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid shows it: base64 of the DER public key."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    return base64.b64encode(der).decode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:  # fmt: skip
    """SendGrid's two headers: ECDSA P-256/SHA-256 over the timestamp, then the body."""
    ts = str(int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts}  # fmt: skip
