"""Where a worker's CPU goes, stage by stage, counted inside the worker processes.

`bench.worker` starts Dramatiq with `bench.probe:setup_worker` in place of
`nurture.queue:setup_worker`: the same broker, actors and settings, plus a thread-CPU
counter around each stage of the send path. Reading the thread's CPU clock costs about a
microsecond, a few times per email. Each worker process writes its totals to
`$NURTURE_BENCH_PROBE_DIR/<pid>.json` once it has stopped:

- render: compose_step minus build_message (Jinja, tracked links, CSS, tokens)
- build: build_message (MIME headers, quoted-printable bodies, bytes)
- smtp: SmtpTransport.send (the client side of the SMTP exchange)
- database: send_batch minus compose and SMTP (claim, checks, outcome, ORM, driver)
- queue: everything else the process did while it ran (Dramatiq: fetch, decode, ack,
  rate-limit slots, heartbeats)

With NURTURE_BENCH_DKIMPY set, emails are signed as nurture signed them before
(bench.dkim.DkimpySigner), for the DKIM benchmark's before-and-after.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from bench.dkim import DKIMPY, sign_with_dkimpy

_totals: dict[str, float] = {}
_calls: dict[str, int] = {}
_lock = threading.Lock()


def _timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - started
            with _lock:
                _totals[stage] = _totals.get(stage, 0.0) + spent
                _calls[stage] = _calls.get(stage, 0) + 1

    return wrapper


#: (module, attribute path, stage): the name each caller looks up at call time.
POINTS = (
    ("nurture.queue", "send_batch", "batch"),
    ("nurture.delivery.prepare", "compose_step", "compose"),
    ("nurture.delivery.compose", "build_message", "build"),
    ("nurture.delivery.transports", "SmtpTransport.send", "smtp"),
)


def install() -> list[str]:
    """Wrap each point that exists; the stages that could not be found."""
    import importlib

    missing = []
    for module_name, path, stage in POINTS:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            missing.append(stage)
            continue
        setattr(owner, name, _timed(stage, getattr(owner, name)))
    return missing


class Probe(Middleware):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started = 0.0

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.started = time.process_time()
        (self.folder / f"{os.getpid()}.ready").touch()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        with _lock:
            totals, calls = dict(_totals), dict(_calls)
        report = {
            "pid": os.getpid(),
            "cpu": time.process_time() - self.started,
            "stages": totals,
            "calls": calls,
            "peak_rss_kb": _peak_rss_kb(),
        }
        (self.folder / f"{os.getpid()}.json").write_text(json.dumps(report))


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def setup_worker() -> None:
    from nurture import queue as tasks

    tasks.setup_worker()
    install()
    if os.environ.get(DKIMPY):
        sign_with_dkimpy()
    folder = Path(os.environ["NURTURE_BENCH_PROBE_DIR"])
    dramatiq.get_broker().add_middleware(Probe(folder))
