"""Service URLs from the settings: checked when settings load, never shown with a password.

A URL like `smtp://user:password@host:587` is a secret. Every message that shows one
goes through `redact`, which works on malformed URLs too, since those are the ones
that end up in error messages.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

from nurture.errors import ConfigError

#: SMTP schemes and their default ports.
SMTP_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
REDIS_SCHEMES = ("redis", "rediss", "unix")

# [scheme://]userinfo@rest, userinfo up to the *last* "@": an unencoded "@" in a
# password must not leave half of it in view; a URL missing its scheme is still redacted.
_USERINFO = re.compile(r"^(?P<scheme>[^:/?#\s]+://)?(?P<userinfo>.*)@(?P<rest>[^@]*)$", re.S)
_PASSWORD_PARAM = re.compile(r"(?i)([?&](?:password|pass|pwd)=)[^&#]*")
_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def redact(url: str) -> str:
    """The URL with any password replaced by `***`, fit for errors and logs."""
    match = _USERINFO.match(url)
    if match and ":" in match["userinfo"]:
        user = match["userinfo"].split(":", 1)[0]
        url = f"{match['scheme'] or ''}{user}:***@{match['rest']}"
    return _PASSWORD_PARAM.sub(r"\1***", url)


def _split(var: str, url: str) -> SplitResult:
    """The parts of `url`, or one sentence naming `var`: a URL that cannot be split is
    never echoed, since where its password ends is anyone's guess.

    More than one "@" before the host means an "@" in the user name or password that
    was not percent-encoded: every parser then cuts the URL somewhere else, and a
    driver's "cannot resolve host" error would show the rest of the password.
    """
    authority = url.partition("://")[2]
    authority = re.split(r"[/?#]", authority, maxsplit=1)[0]
    if authority.count("@") > 1:
        raise ConfigError(f"{var} has an '@' in its user name or password: write it as %40")
    try:
        return urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a "[" without its "]"
        raise ConfigError(
            f"{var} has a '[' that opens an IPv6 address without closing it with ']'"
        ) from None


def _port(var: str, url: str) -> int | None:
    try:
        return _split(var, url).port
    except ValueError:
        raise ConfigError(f"{var} has a port that is not a number: {redact(url)}") from None


def check_smtp_url(url: str) -> str:
    """smtp://, smtp+starttls:// or smtps://, with a host and a numeric port."""
    var = "NURTURE_SMTP_URL"
    parts = _split(var, url)
    if parts.scheme not in SMTP_PORTS:
        raise ConfigError(
            f"{var} must start with smtp://, smtp+starttls:// or smtps://, got {redact(url)}"
        )
    if not parts.hostname:
        raise ConfigError(
            f"{var} names no server, e.g. smtp://user:pass@host:587, got {redact(url)}"
        )
    _port(var, url)
    return url


def check_redis_url(url: str) -> str:
    """redis://, rediss:// or unix://, with a host (or socket path) and a numeric port."""
    var = "NURTURE_REDIS_URL"
    parts = _split(var, url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"{var} must start with redis://, rediss:// or unix://, e.g. "
            f"redis://localhost:6379/0, got {redact(url)}"
        )
    if not (parts.hostname or (parts.scheme == "unix" and parts.path)):
        raise ConfigError(
            f"{var} names no server, e.g. redis://localhost:6379/0, got {redact(url)}"
        )
    _port(var, url)
    return url


def check_database_url(url: str) -> str:
    """A SQLAlchemy URL: dialect://…, with a numeric port when it has one. The driver
    and the rest are SQLAlchemy's to judge when the engine is made. `postgres://`, as
    Heroku and many hosts write it, is SQLAlchemy's `postgresql://`."""
    var = "NURTURE_DATABASE_URL"
    url = re.sub(r"^postgres(?=[+:])", "postgresql", url)
    if not re.match(r"^[A-Za-z][A-Za-z0-9+_.-]*://", url):
        raise ConfigError(
            f"{var} must be a URL such as sqlite:///nurture.db or "
            f"postgresql://user@host/nurture, got {redact(url)}"
        )
    if not url.startswith("sqlite"):
        _port(var, url)
    else:
        _split(var, url)
    return url


def describe(error: BaseException, url: str | None = None) -> str:
    """A database error as one line: the driver's own message, without SQLAlchemy's
    statement dump and its "Background on this error at" link, and without the
    password of `url` should the driver have echoed its connection string."""
    text = _BACKGROUND.sub("", str(getattr(error, "orig", None) or error)).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    password = _database_password(url) if url else None
    return line.replace(password, "***") if password else line


def _database_password(url: str) -> str | None:
    """The password of a database URL, decoded as SQLAlchemy decodes it."""
    try:
        password = urlsplit(url).password
    except ValueError:  # a URL that cannot be parsed names no password
        return None
    return unquote(password) if password else None
