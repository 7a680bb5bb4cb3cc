"""Every error a user can cause, as one family, so the CLI and web can report them cleanly."""

from __future__ import annotations


class NurtureError(Exception):
    """An expected problem that deserves one clear sentence, not a traceback."""


class ConfigError(NurtureError):
    """A setting is missing or malformed; the message names the variable."""


class SequenceError(NurtureError):
    """A problem in a sequence or template file, with its location."""

    def __init__(self, path: str, line: int | None, message: str, *, warning: bool = False):
        self.path, self.line, self.message, self.warning = path, line, message, warning
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {'warning: ' if self.warning else ''}{self.message}"


class TemplateError(NurtureError):
    """A template could not be rendered (syntax, unknown variable, sandbox violation)."""


class TokenError(NurtureError):
    """A link token is tampered with, meant for another purpose, or expired."""


class SubscriberError(NurtureError):
    """Bad subscriber input: an invalid address, time zone or unknown subscriber."""


class DeliveryError(NurtureError):
    """Sending failed. `permanent` (SMTP 5xx) means never retry; otherwise try later."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None):
        self.permanent, self.code = permanent, code
        super().__init__(message)
