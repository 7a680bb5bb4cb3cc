"""DKIM: what signing costs per email, with signing off and on, and on both before
(dkimpy's `dkim.sign` whole, its RSA in pure Python) and after (nurture's signer: dkimpy's
canonicalization, OpenSSL's RSA), all in the same run. Every key is 2048-bit RSA, as
`nurture dkim keygen` makes, relaxed/relaxed, rsa-sha256.

send path: bench/send.py's distributed harness (PostgreSQL, Redis, `nurture worker`
as Dramatiq 2 processes x 2 threads, the counting aiosmtpd sink in a process of its
own): N due deliveries sent end to end, unsigned, signed, and signed by dkimpy (the
workers' composer given DkimpySigner, `NURTURE_BENCH_DKIMPY`). `ratio` is emails/s
signed over unsigned, taken within each run, then the median of the runs.

in process: the example sequence's steps composed for N subscribers (render, tracked
links, MIME bytes) with DKIM off and on, and the same rendered emails built unsigned,
signed, and signed by dkimpy: the signature's own CPU time, without SMTP or a database.

The sides alternate within each run (forward, then backward), so a busy neighbour
moves all of them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench import data
from bench.send import nurture_run, sink_process
from bench.services import SENDER, nurture_env, pg_database, redis_database, workspace
from bench.stats import median

#: Emails per side per run, in process and through the send path.
N = 300
SEND_N = 2_000
#: In a bench worker's environment: sign with DkimpySigner, as nurture did before.
DKIMPY = "NURTURE_BENCH_DKIMPY"
SIDES = ("unsigned", "signed", "dkimpy")


@dataclass(frozen=True)
class DkimpySigner:
    """nurture's signer before OpenSSL: dkimpy's `dkim.sign`, which parses the PEM key
    and does the RSA arithmetic in Python for every email. Same headers, same tags."""

    selector: bytes
    domain: bytes
    pem: bytes

    def sign(self, data: bytes) -> bytes:
        import dkim

        from nurture.delivery.dkim import ALGORITHM, CANONICALIZATION, headers_to_sign

        head = data.partition(b"\r\n\r\n")[0]
        names = (line.partition(b":")[0] for line in head.split(b"\r\n") if line[:1] > b" ")
        header: bytes = dkim.sign(
            data, self.selector, self.domain, self.pem,
            canonicalize=tuple(CANONICALIZATION.split(b"/")), signature_algorithm=ALGORITHM,
            include_headers=headers_to_sign(names),
        )  # fmt: skip
        return header + data


@cache
def dkimpy_signer(selector: str, domain: str, key: Path) -> DkimpySigner:
    """The key read once per process, as nurture's signer reads it."""
    return DkimpySigner(selector.encode(), domain.encode(), key.read_bytes())


def sign_with_dkimpy() -> None:
    """In a bench worker: the composer signs with DkimpySigner (the name compose_step
    looks up at call time), on the same settings and key."""
    from nurture.delivery import compose

    def signer_for(settings: Any) -> DkimpySigner | None:
        if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_key):
            return None
        return dkimpy_signer(settings.dkim_selector, settings.dkim_domain, settings.dkim_key)

    compose.signer_for = signer_for  # type: ignore[assignment]


def run(runs: int = 3, log: Callable[..., None] = print, n: int = N,
        send_n: int = SEND_N) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory() as keys:
        from nurture.delivery.dkim import keygen

        key = keygen(Path(keys) / "bench.pem", "bench", "crumb.example")
        dkim_env = {"NURTURE_DKIM_SELECTOR": key.selector, "NURTURE_DKIM_DOMAIN": key.domain,
                    "NURTURE_DKIM_KEY": str(key.path)}  # fmt: skip
        log("send path:")
        sent = send_path(dkim_env, runs, log, send_n)
        log("in process:")
        found = in_process(dkim_env, runs, log, n)
    return found | {"send": sent}


def send_path(dkim_env: dict[str, str], runs: int, log: Callable[..., None], n: int,
              processes: int = 2, threads: int = 2, connections: int = 4) -> dict[str, Any]:  # fmt: skip
    """N deliveries sent end to end by real workers for each side, as bench/send.py sends."""
    from nurture import clock
    from nurture.settings import load_settings
    from nurture.store import engine as db

    with workspace() as ws, pg_database() as pg_url, redis_database() as redis_url, \
            sink_process() as sink:  # fmt: skip
        env = nurture_env(ws, pg_url, redis_url, NURTURE_SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
                          NURTURE_SMTP_CONCURRENCY=str(connections))  # fmt: skip
        envs = {"unsigned": env, "signed": env | dkim_env, "dkimpy": env | dkim_env | {DKIMPY: "1"}}
        settings = load_settings(ws, env=env)
        data.add_readers(db.get_engine(settings), 1, n, due_every=1, now=clock.now())
        found: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for r in range(runs):
            for side in SIDES if r % 2 == 0 else reversed(SIDES):
                result = nurture_run(settings, envs[side], n, processes, threads)
                if result["sent"] != n:
                    raise RuntimeError(
                        f"{side}: {result['sent']} of {n} sent, {result['not_sent']}"
                    )
                found[side].append(result)
            log(f"  run {r + 1}/{runs}: " + ", ".join(
                f"{side} {found[side][-1]['emails_per_s']:,.0f}/s" for side in SIDES))  # fmt: skip

    def per_run(side: str, over: str) -> float:
        return median([a["emails_per_s"] / b["emails_per_s"]
                       for a, b in zip(found[side], found[over], strict=True)])  # fmt: skip

    return {
        "n": n,
        "workers": f"{processes} processes x {threads} threads",
        "emails_per_s": {side: median([r["emails_per_s"] for r in found[side]]) for side in SIDES},
        "worker_cpu_us": {
            side: median([r["worker_cpu_us"] for r in found[side]]) for side in SIDES
        },  # fmt: skip
        "build_us": {side: median([r["cpu_us"]["build"] for r in found[side]]) for side in SIDES},
        "ratio": per_run("signed", "unsigned"),
        "dkimpy_ratio": per_run("dkimpy", "unsigned"),
        "speedup": per_run("signed", "dkimpy"),
        "runs": found,
    }


def in_process(dkim_env: dict[str, str], runs: int, log: Callable[..., None],
               n: int) -> dict[str, Any]:  # fmt: skip
    """The signature's CPU alone: the same emails built and composed in this process."""
    from nurture.content.rendering import SubscriberView
    from nurture.content.sequences import catalog_for
    from nurture.delivery.compose import compose_step
    from nurture.delivery.dkim import signer_for
    from nurture.delivery.mime import build_message
    from nurture.settings import load_settings

    with workspace() as ws:
        env = nurture_env(ws, f"sqlite:///{ws / 'nurture.db'}", None)
        off = load_settings(ws, env=env)
        on = load_settings(ws, env=env | dkim_env)
        seq = catalog_for(off.sequences_dir).sequences[data.SEQUENCE]
        steps = [seq.step(s) for s in data.STEPS]
        views = [SubscriberView(email=f"reader{i}@example.com", first_name=data.NAMES[i % 10])
                 for i in range(n)]  # fmt: skip

        def compose(settings: Any) -> list[Any]:
            return [compose_step(settings, seq, steps[i % len(steps)], v, i + 1, i + 1)  # type: ignore[arg-type]
                    for i, v in enumerate(views)]  # fmt: skip

        rendered = [c.rendered for c in compose(off)]
        signer = signer_for(on)
        assert signer is not None and on.dkim_key is not None
        before = dkimpy_signer(signer.selector.decode(), signer.domain.decode(), on.dkim_key)
        size = len(compose(on)[0].envelope.data)

        def build(sign: Any) -> None:
            for r, v in zip(rendered, views, strict=True):
                build_message(sender=SENDER,
                              to=v.email, subject=r.subject, html=r.html, text=r.text,
                              list_id=seq.name, list_name=seq.name,
                              unsubscribe_url="https://crumb.example/unsubscribe/TOKEN",
                              feedback=("welcome", seq.name, "sequence"), signer=sign)  # fmt: skip

        sides: dict[str, Callable[[], object]] = {
            "build": lambda: build(None), "build_signed": lambda: build(signer),
            "build_dkimpy": lambda: build(before),
            "compose": lambda: compose(off), "compose_signed": lambda: compose(on),
        }  # fmt: skip
        timings = _alternating(sides, runs, log, n)
    us = {name: median(values) for name, values in timings.items()}
    return {
        "n": n,
        "message_bytes": size,
        "us_per_email": us,
        "sign_us_per_email": us["build_signed"] - us["build"],
        "dkimpy_sign_us_per_email": us["build_dkimpy"] - us["build"],
        "build_ratio": us["build"] / us["build_signed"],
        "dkimpy_build_ratio": us["build"] / us["build_dkimpy"],
        "compose_ratio": us["compose"] / us["compose_signed"],
        "runs_us": timings,
    }


def _alternating(sides: dict[str, Callable[[], object]], runs: int, log: Callable[..., None],
                 n: int) -> dict[str, list[float]]:  # fmt: skip
    """µs of CPU per email of each side, each run, in forward then backward order: CPU
    time, since on a shared machine the wall clock also counts the neighbours' turns."""
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(runs):
        for name in list(sides) if r % 2 == 0 else list(reversed(sides)):
            started = time.process_time()
            sides[name]()
            timings[name].append((time.process_time() - started) / n * 1e6)
        log(
            f"  run {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.0f} µs" for k, v in timings.items())
        )
    return timings
