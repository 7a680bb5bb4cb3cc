"""DKIM: signing every email, making a key, and the public half a DNS record must hold.

Mailbox providers (Gmail and Yahoo since 2024) want bulk mail signed by a domain that
aligns with From, and the one-click unsubscribe headers covered by that signature. The
signature (relaxed/relaxed, rsa-sha256) is made right after the message builder writes
the bytes, so every kind of email is signed in the same place.

dkimpy parses, canonicalizes and folds, exactly as its own `dkim.sign`; the RSA step is
OpenSSL's (through `cryptography`): 0.85 ms of CPU an email where dkimpy's pure-Python
RSA took 7.5 (bench/dkim.py). RSASSA-PKCS1-v1_5 is deterministic, so the header is the one
`dkim.sign` writes for the same message and second, byte for byte (tests/test_dkim.py).

dkimpy is imported only where a key is used: it pulls in dnspython's resolver, a fifth
of a second that a workspace without DKIM (and `nurture validate`) should not pay.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from nurture.errors import ConfigError
from nurture.mailsettings import dkim_private_key
from nurture.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

#: The headers signed, when present: what a reader sees and what a provider acts on,
#: the RFC 8058 one-click pair included (Gmail ignores one-click when it is unsigned).
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"list-id", b"feedback-id", b"mime-version", b"content-type",
)  # fmt: skip
ALGORITHM = b"rsa-sha256"
#: Relaxed for both: a relay that re-folds a header or strips trailing spaces keeps it valid.
CANONICALIZATION = b"relaxed/relaxed"
FIELD = b"DKIM-Signature"
#: RSA key size `nurture dkim keygen` makes: what Gmail and RFC 8301 ask for.
KEY_BITS = 2048
#: Longest string a TXT record may hold (RFC 1035); longer values are split.
TXT_CHUNK = 255


@dataclass(frozen=True)
class Signer:
    """Signs messages for one selector and domain with a key loaded once per process."""

    selector: bytes
    domain: bytes
    key: RSAPrivateKey

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header first. t= is the real time, not
        nurture.clock's: a signature dated in a simulated future would look forged."""
        return self.signature(data, int(time.time())) + data

    def signature(self, data: bytes, timestamp: int) -> bytes:
        """The DKIM-Signature header field (CRLF-terminated) `dkim.sign` writes for this
        message, key and second: its tags in its order, its folding, its hashing."""
        import dkim
        from cryptography.hazmat.primitives.asymmetric import padding, utils
        from cryptography.hazmat.primitives.hashes import SHA256
        from dkim.canonicalization import CanonicalizationPolicy

        policy = CanonicalizationPolicy.from_c_value(CANONICALIZATION)
        headers, body = dkim.rfc822_parse(data)
        signed = headers_to_sign(name for name, _ in headers)
        body_hash = hashlib.sha256(policy.canonicalize_body(body)).digest()
        tags = [(b"v", b"1"), (b"a", ALGORITHM), (b"c", CANONICALIZATION),
                (b"d", self.domain), (b"i", b"@" + self.domain), (b"q", b"dns/txt"),
                (b"s", self.selector), (b"t", str(timestamp).encode("ascii")),
                (b"h", b" : ".join(signed)), (b"bh", base64.b64encode(body_hash)),
                (b"b", b"0" * 60)]  # fmt: skip
        # As dkimpy: folded with a placeholder b= (so b= starts a line), then emptied.
        unsigned = dkim.RE_BTAG.sub(rb"\1", _folded(tags))
        digest = hashlib.sha256()
        dkim.hash_headers(digest, policy, policy.canonicalize_headers(headers), signed,
                          (FIELD, b" " + unsigned), None)  # fmt: skip
        b = self.key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(SHA256()))
        tags[-1] = (b"b", base64.b64encode(b))
        return FIELD + b": " + _folded(tags, end=b"\r\n")


def headers_to_sign(names: Iterable[bytes]) -> list[bytes]:
    """SIGNED_HEADERS among a message's header names, in that order (`include_headers`)."""
    present = {name.lower() for name in names}
    return [h for h in SIGNED_HEADERS if h in present]


def _folded(tags: list[tuple[bytes, bytes]], end: bytes = b"") -> bytes:
    import dkim

    value = b"; ".join(b"=".join(tag) for tag in tags) + end
    return dkim.fold(value, namelen=len(FIELD), linesep=b"\r\n")  # type: ignore[no-any-return]


def signer_for(settings: Settings) -> Signer | None:
    """The signer the settings ask for, or None when DKIM is off."""
    if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_key):
        return None
    return _signer(settings.dkim_selector, settings.dkim_domain, settings.dkim_key)


@lru_cache(maxsize=4)
def _signer(selector: str, domain: str, path: Path) -> Signer:
    """Read and load the key once per process, not once per email."""
    return Signer(selector.encode(), domain.encode(), dkim_private_key(path))


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
    ours = dkim_private_key(settings.dkim_key).public_key().public_numbers()
    if (published["modulus"], published["publicExponent"]) != (ours.n, ours.e):
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

    The key is made by the `openssl` command, as dkimpy's own `dknewkey` does."""
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


def committable_in_git(path: Path) -> bool:
    """Whether `path` lies in a git work tree that does not ignore it: one `git add .` from
    publishing the private key. False when git is absent or the path is outside a work tree."""
    git = shutil.which("git")
    if git is None:
        return False
    folder = path.resolve().parent
    inside = subprocess.run([git, "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    ignored = subprocess.run([git, "-C", str(folder), "check-ignore", "-q", path.name],
                             capture_output=True, check=False)  # fmt: skip
    return ignored.returncode == 1


def _openssl(command: list[str], stdin: bytes) -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"openssl failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
