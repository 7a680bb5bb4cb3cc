"""Headless Chromium: where it is, how it starts, where screens are saved."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from tests.services import free_port

ARTIFACTS = Path(__file__).parent.parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def html_of(received) -> str:
    return received.message.get_body(("html",)).get_content()


@contextmanager
def serving(make_app: Callable[[str], Any]) -> Iterator[tuple[str, Any]]:
    """An app on a real port (a test harness server; production runs gunicorn), built by
    `make_app(base_url)` for the address it is served at."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(base)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield base, app
    finally:
        server.shutdown()
