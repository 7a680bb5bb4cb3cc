"""`nurture serve`: the web app under gunicorn, never Flask's development server.

In embedded mode (no NURTURE_REDIS_URL) each worker also runs `send-due` on a timer,
so one command is a whole working system. Claiming is safe from many processes at
once, so several workers doing it costs a little work, never a duplicate email.
"""

from __future__ import annotations

import gc
import logging
import re
from typing import Any
from urllib.parse import unquote

from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from nurture.health import check_database
from nurture.settings import Settings
from nurture.web import create_app
from nurture.web.common import TOKEN_ROUTE

log = logging.getLogger(__name__)

#: gunicorn's threaded worker: requests mostly wait on the database or SMTP, not the CPU.
WORKER_CLASS = "gthread"
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 4


#: First path segments after which a path holds a personal token: the log shows the
#: route, not the token, which would let anyone who reads the log act for that person.
TOKEN_SEGMENTS = frozenset({"confirm", "unsubscribe", "resubscribe", "c", "o"})
#: First path segments whose query string may hold a secret (a provider's webhook
#: `?token=`): the log shows `?<redacted>` instead of it.
SECRET_QUERY_SEGMENTS = frozenset({"webhooks"})
_URI = re.compile(r"^(?P<origin>[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?(?P<path>[^?#]*)(?P<rest>.*)$",
                  re.S)  # fmt: skip


def loggable(uri: str, route: str | None = None) -> str:
    """`uri` with any link token replaced by `<token>`.

    `route` is the app's own word (common.TOKEN_ROUTE) for a request it routed to a
    token view: then the path is that route, whatever its spelling. Otherwise (a 404,
    a referrer) the path is read as a router might read it, percent-decoded and with
    slashes merged, and everything after a token route's segment is hidden. A
    webhook's query string (a provider's secret `?token=`) is hidden whole.
    """
    match = _URI.match(uri)
    if match is None:  # pragma: no cover - the pattern matches any text
        return uri
    path = match["path"]
    for _ in range(3):  # "%2563" is "%63" is "c"; a router decodes once, a proxy again
        path = unquote(path)
    segments = [s for s in path.split("/") if s]
    origin, rest = match["origin"] or "", match["rest"]
    if rest and any(s.lower() in SECRET_QUERY_SEGMENTS for s in segments):
        rest = "?<redacted>"
    if route is not None:
        return f"{origin}{route}{rest}"
    for i, segment in enumerate(segments):
        if segment.lower() in TOKEN_SEGMENTS and i + 1 < len(segments):
            return f"{origin}/{'/'.join(segments[: i + 1])}/<token>{rest}"
    return f"{origin}{match['path']}{rest}"


class AccessLog(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, with only the fields of its default access line computed: its
    own makes ~60 (every header and environ variable) for the 9 the line shows, a
    twentieth of a signup's CPU (measured with py-spy). Tokens are left out."""

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
    ) -> dict[str, Any]:
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"), "l": "-", "u": self._get_user(environ) or "-",
            "t": self.now(), "s": status, "b": str(sent) if sent is not None else "-",
            "r": f"{environ['REQUEST_METHOD']} "
                 f"{loggable(environ['RAW_URI'], environ.get(TOKEN_ROUTE))} "
                 f"{environ['SERVER_PROTOCOL']}",
            "f": loggable(environ.get("HTTP_REFERER", "-")),
            "a": environ.get("HTTP_USER_AGENT", "-"),
        }  # fmt: skip


def _nurture(worker: Any) -> Any:
    app: Flask = worker.wsgi
    return app.extensions["nurture"]


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, settings: Settings, *, host: str, port: int, workers: int = DEFAULT_WORKERS,
        threads: int = DEFAULT_THREADS, send_interval: float = 60.0, proxies: int = 0,
    ) -> None:  # fmt: skip
        self.settings, self.proxies = settings, proxies
        run_loop = settings.embedded and send_interval > 0

        def post_worker_init(worker: Any) -> None:
            # What the app loaded stays for the worker's life: out of the collector's
            # sight, a full collection scans only what requests left behind (it took
            # ~190 ms with all 4 threads stopped, measured, and set the p99 of a signup).
            gc.freeze()
            if run_loop:
                _nurture(worker).background.start_loop(send_interval)

        def worker_exit(server: Any, worker: Any) -> None:
            if getattr(worker, "wsgi", None) is not None:
                _nurture(worker).background.stop()  # finish the email being sent

        self.options: dict[str, Any] = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": WORKER_CLASS,
            "timeout": 60,
            "graceful_timeout": 30,
            "accesslog": "-",  # gunicorn's default line, cheaper (AccessLog)
            "logger_class": AccessLog,
            "errorlog": "-",
            "proc_name": "nurture",
            "control_socket_disable": True,  # gunicorn's admin socket: nothing here uses it
            "post_worker_init": post_worker_init,
            "worker_exit": worker_exit,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings, proxies=self.proxies)

    def run(self) -> None:
        # Check the database here, once, so a wrong URL is one clear error instead of
        # every worker failing to boot; then close it, so no worker inherits a socket.
        check_database(self.settings)
        super().run()
