"""DKIM: signing every email, making a key, and the public half a DNS record must hold.

Mailbox providers (Gmail and Yahoo since 2024) want bulk mail signed by a domain that
aligns with From, and the one-click unsubscribe headers covered by that signature. The
signature is made with dkimpy (relaxed/relaxed, rsa-sha256) right after the message
builder writes the bytes, so every kind of email is signed in the same place.

dkimpy is imported only where a key is used: it pulls in dnspython's resolver, a fifth
of a second that a workspace without DKIM (and `nurture validate`) should not pay.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from nurture.errors import ConfigError
from nurture.settings import Settings

#: The headers signed, when present: what a reader sees and what a provider acts on,
#: the RFC 8058 one-click pair included (Gmail ignores one-click when it is unsigned).
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"list-id", b"feedback-id", b"mime-version", b"content-type",
)  # fmt: skip
#: RSA key size `nurture dkim keygen` makes: what Gmail and RFC 8301 ask for.
KEY_BITS = 2048
#: Longest string a TXT record may hold (RFC 1035); longer values are split.
TXT_CHUNK = 255


@dataclass(frozen=True)
class Signer:
    """Signs messages for one selector and domain with a key read once."""

    selector: str
    domain: str
    key: bytes
    dkim_sign: Callable[..., bytes]  # dkim.sign, imported with the key

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header first."""
        present = _header_names(data)
        headers = [h for h in SIGNED_HEADERS if h in present]
        signature = self.dkim_sign(
            data, self.selector.encode(), self.domain.encode(), self.key,
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"rsa-sha256",
            include_headers=headers,
        )  # fmt: skip
        return signature + data


def _header_names(data: bytes) -> set[bytes]:
    head = data.partition(b"\r\n\r\n")[0]
    return {line.partition(b":")[0].lower() for line in head.split(b"\r\n") if line[:1] > b" "}


def signer_for(settings: Settings) -> Signer | None:
    """The signer the settings ask for, or None when DKIM is off."""
    if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_key):
        return None
    return _signer(settings.dkim_selector, settings.dkim_domain, settings.dkim_key)


@lru_cache(maxsize=4)
def _signer(selector: str, domain: str, path: Path) -> Signer:
    """Read and parse the key once per process, not once per email."""
    import dkim

    key = path.read_bytes()
    private_key(key, path)
    return Signer(selector, domain, key, dkim.sign)


def private_key(pem: bytes, path: Path | str) -> dict[str, Any]:
    """The RSA numbers of a PEM key, or one clear error naming the file."""
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        return parse_pem_private_key(pem)  # type: ignore[no-any-return]
    except (UnparsableKeyError, ValueError) as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"NURTURE_DKIM_KEY: {path} is not an RSA private key ({first})") from None


def key_problem(settings: Settings) -> str | None:
    """Why the configured key cannot sign, or None (for `nurture validate`)."""
    if settings.dkim_key is None:
        return None
    try:
        private_key(settings.dkim_key.read_bytes(), settings.dkim_key)
    except OSError as e:
        return f"NURTURE_DKIM_KEY: cannot read {settings.dkim_key}: {e.strerror}"
    except ConfigError as e:
        return str(e)
    return None


def record_matches(settings: Settings, record: bytes) -> str | None:
    """Why a DKIM TXT record does not publish the configured key, or None."""
    from dkim.crypto import UnparsableKeyError, parse_public_key

    assert settings.dkim_key is not None
    tags = dict(
        (k.strip(), v.strip())
        for k, _, v in (t.partition(b"=") for t in record.split(b";"))
        if k.strip()
    )
    if tags.get(b"v", b"DKIM1") != b"DKIM1" or tags.get(b"k", b"rsa") != b"rsa":
        return "the record is not a DKIM1 RSA key (v=DKIM1; k=rsa)"
    p = b"".join(tags.get(b"p", b"").split())
    if not p:
        return "the record has no public key (p= is empty: the key was revoked)"
    try:
        published = parse_public_key(base64.b64decode(p))
    except (UnparsableKeyError, ValueError):
        return "the record's p= is not an RSA public key"
    ours = private_key(settings.dkim_key.read_bytes(), settings.dkim_key)
    if (published["modulus"], published["publicExponent"]) != (
        ours["modulus"],
        ours["publicExponent"],
    ):
        return "the record publishes a different key than NURTURE_DKIM_KEY"
    return None


@dataclass(frozen=True)
class NewKey:
    path: Path
    selector: str
    domain: str
    public_der: bytes

    @property
    def txt_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={base64.b64encode(self.public_der).decode('ascii')}"

    @property
    def record(self) -> str:
        """The zone-file line, the value split into strings of at most 255 characters."""
        parts = " ".join(f'"{c}"' for c in textwrap.wrap(self.txt_value, TXT_CHUNK))
        return f"{self.txt_name}. IN TXT ( {parts} )"


def keygen(path: Path, selector: str, domain: str) -> NewKey:
    """Write a new 2048-bit RSA key readable by its owner only; never overwrite one.

    The key is made by the `openssl` command, as dkimpy's own `dknewkey` does: dkimpy
    signs in pure Python and carries no key generator."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("nurture dkim keygen needs the openssl command (apt-get install openssl)")
    if path.exists():
        raise ConfigError(f"{path} already exists: choose another --out or remove it first")
    pem = _openssl([openssl, "genrsa", str(KEY_BITS)], b"")
    der = _openssl([openssl, "pkey", "-pubout", "-outform", "DER"], pem)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return NewKey(path, selector, domain.lower().rstrip("."), der)


def _openssl(command: list[str], stdin: bytes) -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"openssl failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
