"""DKIM: what signing costs per email, in the same process and run as not signing.

Each run composes the example sequence's steps for N subscribers (render, tracked links,
MIME bytes) with DKIM off and on (a 2048-bit RSA key, relaxed/relaxed, rsa-sha256, as
`nurture dkim keygen` makes), and builds the same rendered emails with and without the
signature. The two sides alternate within each run so a busy neighbour moves both.
`ratio` is emails/s with signing over emails/s without: the share of the composing rate
DKIM leaves (the SMTP and database parts of a send do not change).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import data
from bench.services import SENDER, nurture_env, workspace
from bench.stats import median

#: Emails per side per run.
N = 300


def run(runs: int = 3, log: Callable[..., None] = print, n: int = N) -> dict[str, Any]:
    from nurture.content.rendering import SubscriberView
    from nurture.content.sequences import catalog_for
    from nurture.delivery.compose import compose_step
    from nurture.delivery.dkim import keygen, signer_for
    from nurture.delivery.mime import build_message
    from nurture.settings import load_settings

    with workspace() as ws, tempfile.TemporaryDirectory() as keys:
        key = keygen(Path(keys) / "bench.pem", "bench", "crumb.example")
        env = nurture_env(ws, f"sqlite:///{ws / 'nurture.db'}", None)
        off = load_settings(ws, env=env)
        on = load_settings(ws, env=env | {"NURTURE_DKIM_SELECTOR": key.selector,
                                          "NURTURE_DKIM_DOMAIN": key.domain,
                                          "NURTURE_DKIM_KEY": str(key.path)})  # fmt: skip
        seq = catalog_for(off.sequences_dir).sequences[data.SEQUENCE]
        steps = [seq.step(s) for s in data.STEPS]
        views = [SubscriberView(email=f"reader{i}@example.com", first_name=data.NAMES[i % 10])
                 for i in range(n)]  # fmt: skip

        def compose(settings: Any) -> list[Any]:
            return [compose_step(settings, seq, steps[i % len(steps)], v, i + 1, i + 1)  # type: ignore[arg-type]
                    for i, v in enumerate(views)]  # fmt: skip

        rendered = [c.rendered for c in compose(off)]
        signer = signer_for(on)
        assert signer is not None
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
            "compose": lambda: compose(off), "compose_signed": lambda: compose(on),
        }  # fmt: skip
        timings: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(runs):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                started = time.perf_counter()
                sides[name]()
                timings[name].append((time.perf_counter() - started) / n * 1e6)
            log(
                f"run {r + 1}/{runs}: "
                + ", ".join(f"{k} {v[-1]:.0f} µs" for k, v in timings.items())
            )
    us = {name: median(values) for name, values in timings.items()}
    return {
        "n": n,
        "message_bytes": size,
        "us_per_email": us,
        "sign_us_per_email": us["build_signed"] - us["build"],
        "build_ratio": us["build"] / us["build_signed"],
        "ratio": us["compose"] / us["compose_signed"],
        "runs": timings,
    }
