"""Start-up: how long `nurture --help` and `nurture validate` take before doing anything.

Each command is a fresh process, as from a shell, cron or a git hook. The baseline is
`python -c pass` with the same interpreter, timed in the same rounds: a busy machine
moves both. The rounds interleave the three commands so that a burst of load falls on
all of them alike. Wall time and CPU time (user + system of the child) are both kept.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.services import workspace
from bench.stats import median

#: Fresh processes per command; the median is kept.
REPEAT = 10
#: Target from the issue: each command under this many seconds.
TARGET_SECONDS = 0.35


def _script() -> str:
    """The console script next to this interpreter, as an installed `nurture` is run."""
    script = Path(sys.executable).parent / "nurture"
    return str(script) if script.exists() else ""


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run(runs: int = 1, log: Callable[..., None] = print, repeat: int = REPEAT) -> dict[str, Any]:
    """Medians over `repeat` fresh processes of each command (`runs` is accepted so every
    benchmark is called alike; the rounds here are the repeats)."""
    nurture = _script()
    if not nurture:
        raise RuntimeError("no `nurture` console script next to this Python: pip install -e .")
    with workspace() as ws:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
        env.update(NURTURE_WORKSPACE=str(ws), NURTURE_SECRET_KEY="bench-secret-key-" + "x" * 32)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "nurture --help": [nurture, "--help"],
            "nurture validate": [nurture, "validate"],
        }
        _time(commands["nurture validate"], env)  # warm the file cache and .pyc files
        samples: dict[str, dict[str, list[float]]] = {
            name: {"wall": [], "cpu": []} for name in commands
        }
        for i in range(repeat):
            log(f"  round {i + 1}/{repeat}", end="\r")
            for name, cmd in commands.items():
                wall, cpu = _time(cmd, env)
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
        log("")
    base = {k: median(v) for k, v in samples["python -c pass"].items()}
    result: dict[str, Any] = {"repeat": repeat, "target_seconds": TARGET_SECONDS}
    for name, got in samples.items():
        wall, cpu = median(got["wall"]), median(got["cpu"])
        result[name] = {
            "wall_s": wall, "cpu_s": cpu, "runs": got,
            "wall_ratio": wall / base["wall"] if base["wall"] else 0.0,
            "over_python_s": wall - base["wall"],
        }  # fmt: skip
    return result
