"""Talking to a real `nurture serve` over HTTP, as a browser or a form would."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import urlencode


def http(url: str, form: dict[str, str] | None = None) -> tuple[int, str]:
    data = urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data)  # noqa: S310 - our own http:// server
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except OSError:  # not listening yet
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting")
