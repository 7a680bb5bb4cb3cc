"""A local web server for `validate --check-links`: pages that answer, move, are gone,
or refuse HEAD; it counts the requests it gets."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.server.hits[(self.command, self.path)] += 1  # type: ignore[attr-defined]
        if self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/ok")
        elif self.path == "/no-head" and self.command == "HEAD":
            self.send_response(405)
        elif self.path in ("/ok", "/no-head"):
            self.send_response(200)
        elif self.path == "/broken":
            self.send_response(500)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args: Any) -> None:
        pass


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 for one `with` block, answering with `handler`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class LinkServer(LocalServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.server.hits = Counter()  # type: ignore[attr-defined]

    @property
    def hits(self) -> Counter[tuple[str, str]]:
        return self.server.hits  # type: ignore[attr-defined, no-any-return]
