"""Transports: how a built message leaves. SMTP for real, `outbox/` files for the embedded default.

Both raise DeliveryError with `permanent` set as RFC 5321 says: 5xx never retried,
4xx and dropped connections tried again later. SMTP errors also say what was refused
(`SmtpError.scope`), because only a refused *recipient* means a bad address: a refused
sender or an unreachable server fails every message alike and must not suppress anyone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import smtplib
import ssl
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import unquote, urlsplit

from nurture.delivery.mime import BARE_ADDRESS, Envelope
from nurture.errors import DeliveryError
from nurture.urls import SMTP_PORTS, check_smtp_url

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Seconds smtplib may block on one socket operation; Dramatiq's TimeLimit cannot interrupt it.
SMTP_TIMEOUT = 30.0

#: What an SMTP error is about: this recipient, this message, or every message (the
#: server is unreachable, closing, or refuses our sender).
Scope = Literal["address", "message", "server"]


class SmtpError(DeliveryError):
    """A DeliveryError that knows whether the address, the message or the server failed."""

    def __init__(self, message: str, *, permanent: bool, scope: Scope, code: int | None = None):
        super().__init__(message, permanent=permanent, code=code)
        self.scope: Scope = scope


class Transport(Protocol):
    def send(self, envelope: Envelope) -> None: ...

    def close(self) -> None: ...


class OutboxTransport:
    """Writes each message as an `.eml` file: open it in any mail client to look at it.

    The files hold confirm and unsubscribe links, which act for their recipient: they
    are readable by the owner only (0600), in a folder nurture makes 0700.
    """

    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, envelope: Envelope) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", envelope.recipient)
        final = self.folder / f"{stamp}-{safe}.eml"
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # a leftover .tmp keeps its mode otherwise
            f.write(envelope.data)
        os.replace(tmp, final)  # a reader never sees half a message

    def close(self) -> None:
        pass


#: A line that starts with a dot: SMTP doubles it (RFC 5321 §4.5.2).
_DOT_LINE = re.compile(rb"(?m)^\.")


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP with MAIL, RCPT and DATA as sendmail() calls them, minus the work our
    messages never need: a bare address (mime.BARE_ADDRESS) goes out as `<address>`
    without email.utils.parseaddr (tens of µs, twice per message), and a message is
    copied through the dot-doubling regex only when a line starts with a dot, which a
    quick search tells. Anything else is smtplib's own code."""

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not BARE_ADDRESS.fullmatch(sender) or any(o.lower() == "smtputf8" for o in options):
            return super().mail(sender, options)
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        return self.docmd("mail", f"FROM:<{sender}>{extra}")

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not BARE_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        return self.docmd("rcpt", f"TO:<{recip}>{extra}")

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        code, reply = self.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        if msg.startswith(b".") or b"\n." in msg:
            msg = _DOT_LINE.sub(b"..", msg)
        self.send(msg + (b"" if msg.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return self.getreply()


class _SMTP_SSL(_SMTP, smtplib.SMTP_SSL):  # noqa: N801 - smtplib's name, with ours in front
    pass


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the system's CA certificates costs
    milliseconds, and a worker connects again for every batch."""
    return ssl.create_default_context()


class SmtpTransport:
    """One reused SMTP connection; reconnects once if the server dropped an idle one."""

    def __init__(self, url: str, timeout: float = SMTP_TIMEOUT):
        parts = urlsplit(check_smtp_url(url))  # checked when settings load; again for callers
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or SMTP_PORTS[parts.scheme]
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self.scheme == "smtps":
            conn: smtplib.SMTP = _SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=_tls_context()
            )
        else:
            conn = _SMTP(self.host, self.port, timeout=self.timeout)
            if self.scheme == "smtp+starttls":
                conn.starttls(context=_tls_context())
        if self.user:
            conn.login(self.user, self.password or "")
        return conn

    def send(self, envelope: Envelope) -> None:
        reused = self.conn is not None
        try:
            self._send_once(envelope)
        except smtplib.SMTPServerDisconnected:
            self.close()
            if not reused:
                raise _unreachable("SMTP server closed the connection") from None
            try:  # an idle connection the server had closed: one fresh attempt
                self._send_once(envelope)
            except smtplib.SMTPServerDisconnected:
                self.close()
                raise _unreachable("SMTP server closed the connection") from None

    def _send_once(self, envelope: Envelope) -> None:
        try:
            if self.conn is None:
                self.conn = self._connect()
            refused = self.conn.sendmail(envelope.sender, [envelope.recipient], envelope.data)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            if code == 421:  # smtplib has closed the socket already
                self.close()
            raise _error(code, text, "address") from None
        except smtplib.SMTPSenderRefused as e:
            if e.smtp_code == 421:
                self.close()
            # Our own sender refused: every message would be, and no address is at fault.
            raise _error(e.smtp_code, e.smtp_error, "server", permanent=False) from None
        except smtplib.SMTPResponseException as e:  # DATA refused: this message, as sent
            if e.smtp_code == 421:  # the server is closing this connection
                self.close()
            raise _error(e.smtp_code, e.smtp_error, "message") from None
        except smtplib.SMTPException as e:
            self.close()
            raise _unreachable(f"SMTP error: {e}") from None
        except (OSError, ssl.SSLError) as e:
            self.close()
            raise _unreachable(f"cannot reach SMTP server {self.host}:{self.port}: {e}") from None
        if refused:
            code, text = next(iter(refused.values()))
            raise _error(code, text, "address")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.conn.quit()
            self.conn = None


def _error(
    code: int, text: bytes | str, scope: Scope, *, permanent: bool | None = None
) -> SmtpError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if code == 421:  # "service not available": the whole server, whatever we were sending
        scope = "server"
    if permanent is None:
        permanent = 500 <= code < 600
    return SmtpError(f"SMTP {code}: {text}", permanent=permanent, scope=scope, code=code)


def _unreachable(message: str) -> SmtpError:
    return SmtpError(message, permanent=False, scope="server")


_local = threading.local()


def transport_for(smtp_url: str | None, outbox: Path) -> Transport:
    """This thread's transport, so each worker thread reuses its own SMTP connection."""
    key = (smtp_url, outbox)
    cached = getattr(_local, "transport", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    transport: Transport = (
        SmtpTransport(smtp_url, SMTP_TIMEOUT) if smtp_url else OutboxTransport(outbox)
    )
    _local.transport = (key, transport)
    return transport


def close_thread_transport() -> None:
    cached = getattr(_local, "transport", None)
    if cached is not None:
        cached[1].close()
        _local.transport = None
