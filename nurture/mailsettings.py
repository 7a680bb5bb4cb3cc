"""Settings of the mail around the mail: where bounces come back and how they count, and
the DKIM key. Kept apart from settings.py, which reads them through these helpers."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nurture.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

#: Reads one setting by its short name (settings._Source.get: it remembers the name).
Getter = Callable[[str], str | None]
PREFIX = "NURTURE_"
#: Soft bounces (a full mailbox, a server down for days) of one address within a window
#: that suppress it: a single one never does.
DEFAULT_SOFT_BOUNCE_LIMIT = "3 in 30d"
_SOFT_LIMIT = re.compile(r"\s*([0-9]+)\s+in\s+([0-9]+)\s*d(?:ays?)?\s*", re.IGNORECASE)


def _soft_bounce_limit(get: Getter) -> tuple[int, timedelta]:
    """NURTURE_SOFT_BOUNCE_LIMIT such as "3 in 30d": never fewer than 2, so that one
    full mailbox never suppresses anyone."""
    value = get("soft_bounce_limit") or DEFAULT_SOFT_BOUNCE_LIMIT
    match = _SOFT_LIMIT.fullmatch(value)
    if not match or int(match[1]) < 2 or int(match[2]) < 1:
        raise ConfigError(
            f"{PREFIX}SOFT_BOUNCE_LIMIT must be a count of at least 2 within days, such as "
            f"'3 in 30d', got {value!r}"
        )
    return int(match[1]), timedelta(days=int(match[2]))


def _bounce_address(get: Getter) -> str | None:
    value = get("bounce_address")
    if value and (value.count("@") != 1 or "+" in value or not value.isascii()
                  or any(c in value for c in " <>\"(),;:")):  # fmt: skip
        raise ConfigError(
            f"{PREFIX}BOUNCE_ADDRESS must be a plain address without '+', such as "
            f"'bounces@bounce.crumb.example', got {value!r}"
        )
    return value


#: An SNS topic's ARN: partition, region, 12-digit account, name (`.fifo` for FIFO topics).
_TOPIC_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?"
)


def _ses_topic_arns(get: Getter) -> tuple[str, ...]:
    """NURTURE_SES_TOPIC_ARNS: the SNS topics SES reports to, comma-separated. A
    signature only proves a message came from SNS, from anyone's topic: the topic is
    what says it is ours."""
    arns = tuple(a for a in (get("ses_topic_arns") or "").replace(",", " ").split() if a)
    for arn in arns:
        if not _TOPIC_ARN.fullmatch(arn):
            raise ConfigError(
                f"{PREFIX}SES_TOPIC_ARNS must list SNS topic ARNs such as "
                f"'arn:aws:sns:eu-west-1:123456789012:ses-feedback', got {arn!r}"
            )
    return arns


def _sendgrid_key(get: Getter) -> bytes | None:
    """NURTURE_SENDGRID_WEBHOOK_KEY, the base64 text SendGrid shows (a PEM is read too),
    as DER bytes. That it is a P-256 public key is checked where it is used and by
    `nurture validate` (the parser is too slow to import for every command)."""
    value = get("sendgrid_webhook_key")
    if value is None:
        return None
    text = "".join(ln for ln in value.splitlines() if not ln.startswith("-----"))
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        der = b""
    if not der:
        raise ConfigError(
            f"{PREFIX}SENDGRID_WEBHOOK_KEY must be the verification key SendGrid shows "
            f"(base64, such as 'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…'), got {value[:20]!r}"
        )
    return der


@lru_cache(maxsize=4)
def sendgrid_verification_key(der: bytes) -> EllipticCurvePublicKey:
    """The P-256 public key in NURTURE_SENDGRID_WEBHOOK_KEY; ConfigError if it is none.
    Read where it is used and by `nurture validate`, not at start-up: see _sendgrid_key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(der)
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{PREFIX}SENDGRID_WEBHOOK_KEY is not an ECDSA P-256 public key: "
                          "copy the verification key of SendGrid's signed event webhook")  # fmt: skip
    return key


def bounce_settings(get: Getter) -> dict[str, Any]:
    """What handling bounces and complaints reads (docs/deliverability.md)."""
    soft_count, soft_window = _soft_bounce_limit(get)
    return {
        "bounce_address": _bounce_address(get),
        "soft_bounce_count": soft_count,
        "soft_bounce_window": soft_window,
        "bounce_imap_url": get("bounce_imap_url"),
        "postmark_webhook_token": get("postmark_webhook_token"),
        "mailgun_signing_key": get("mailgun_signing_key"),
        "ses_topic_arns": _ses_topic_arns(get),
        "sendgrid_webhook_key": _sendgrid_key(get),
    }


_DKIM = ("dkim_selector", "dkim_domain", "dkim_key")
_PEM_KEY = re.compile(r"-----BEGIN (?:RSA )?PRIVATE KEY-----\s+([A-Za-z0-9+/=\s]+?)\s*-----END")


def dkim_settings(get: Getter, ws: Path) -> dict[str, Any]:
    """The three DKIM settings, all or none. The key file is read here, so a wrong path
    is one clear error at start-up rather than a failed send; `nurture validate` and
    the signer load the key whole (dkim_private_key: OpenSSL, not worth importing for
    every command)."""
    selector, domain, key = (get(name) for name in _DKIM)
    missing = [f"{PREFIX}{n.upper()}" for n in _DKIM if not get(n)]
    if len(missing) == len(_DKIM):
        return {}
    if missing:
        raise ConfigError(f"DKIM signing needs {PREFIX}DKIM_SELECTOR, {PREFIX}DKIM_DOMAIN and "
                          f"{PREFIX}DKIM_KEY together: {' and '.join(missing)} not set")  # fmt: skip
    path = (ws / str(key)).resolve()
    try:
        pem = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a PEM file"
        raise ConfigError(f"{PREFIX}DKIM_KEY: cannot read {path}: {reason}") from None
    if not _PEM_KEY.search(pem):
        raise ConfigError(f"{PREFIX}DKIM_KEY: {path} holds no PEM RSA private key "
                          "(make one with `nurture dkim keygen`)")  # fmt: skip
    return {"dkim_selector": selector, "dkim_domain": str(domain).lower().rstrip("."),
            "dkim_key": path}  # fmt: skip


#: Receivers ignore signatures made with shorter RSA keys (RFC 8301).
DKIM_MIN_KEY_BITS = 1024


def dkim_private_key(path: Path) -> RSAPrivateKey:
    """The RSA key in NURTURE_DKIM_KEY, loaded by OpenSSL; ConfigError naming the file
    when it cannot sign. The one check of the key: the signer and `nurture validate`
    both call it, so validate accepts exactly the keys that sign."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"{PREFIX}DKIM_KEY: cannot read {path}: {e.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        why = "it is encrypted" if isinstance(e, TypeError) else "OpenSSL cannot read it"
        raise ConfigError(f"{PREFIX}DKIM_KEY: {path} is not a usable RSA private key ({why}; "
                          "make one with `nurture dkim keygen`)") from None  # fmt: skip
    if not isinstance(key, RSAPrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "other"
        raise ConfigError(f"{PREFIX}DKIM_KEY: {path} is not a usable RSA private key ({kind} "
                          "keys do not sign rsa-sha256; make one with `nurture dkim keygen`)")  # fmt: skip
    if key.key_size < DKIM_MIN_KEY_BITS:
        raise ConfigError(f"{PREFIX}DKIM_KEY: {path} is not a usable RSA private key (it has "
                          f"{key.key_size} bits and receivers ignore signatures under "
                          f"{DKIM_MIN_KEY_BITS}; make a new one with `nurture dkim keygen`)")  # fmt: skip
    return key
