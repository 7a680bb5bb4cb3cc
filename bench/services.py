"""What every benchmark needs: a fresh PostgreSQL database, an empty Redis database of
its own, a workspace, child processes that are always stopped, and memory readings.

Nothing here is left behind: each context manager undoes what it started, also when
a benchmark fails half way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import flush_keeping_claim as flush_keeping_claim  # the queues, emptied

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("NURTURE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NURTURE_BENCH_REDIS", "redis://127.0.0.1:6379")
SENDER = "Maya at Crumb & Co <hello@crumb.example>"
POSTAL = "Crumb & Co, 12 Mill Lane, Bristol"
BASE_URL = "https://news.crumb.example"


class Unavailable(RuntimeError):
    """A service the benchmark needs does not answer."""


@contextmanager
def pg_database(prefix: str = "nurture_bench") -> Iterator[str]:
    """A new PostgreSQL database at the latest migration, dropped afterwards."""
    import psycopg

    from nurture.store import engine as db

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        raise Unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {e}") from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        db.upgrade(db.engine_for(url))
        yield url
    finally:
        db.dispose_all()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_database() -> Iterator[str]:
    """An empty Redis database (1-15) of this run's own, flushed afterwards."""
    import redis

    from tests.services import own_redis_database

    taken = contextlib.ExitStack()
    try:
        url = taken.enter_context(own_redis_database(REDIS_URL))
    except (redis.RedisError, LookupError) as e:
        raise Unavailable(f"Redis at {REDIS_URL}: {e}") from None
    with taken:
        yield url


@contextmanager
def workspace() -> Iterator[Path]:
    """A copy of the repository's example workspace (its sequences and templates)."""
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    try:
        shutil.copytree(ROOT / "sequences", folder / "sequences")
        shutil.copytree(ROOT / "templates", folder / "templates")
        (folder / "nurture.toml").write_text(f'from = "{SENDER}"\npostal_address = "{POSTAL}"\n')
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def nurture_env(ws: Path, database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment a nurture command of this benchmark runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        NURTURE_WORKSPACE=str(ws),
        NURTURE_DATABASE_URL=database_url,
        NURTURE_BASE_URL=BASE_URL,
        NURTURE_SECRET_KEY="bench-secret-key-" + "x" * 32,
        PYTHONPATH=str(ROOT),
    )
    if redis_url:
        env["NURTURE_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


@contextmanager
def child(
    args: list[str], env: dict[str, str] | None = None, **kw: object
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own process group, stopped with the group on the way out:
    SIGTERM first (a clean shutdown), SIGKILL if it is still there after 30 s."""
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the leader only (gunicorn and Dramatiq pass it on to their workers; a
    second signal would make them hurry), then SIGKILL to any of its group left over."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in below:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == proc.pid:
                os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def peak_rss_mb(pid: int) -> float:
    """The highest resident set size the process has had (VmHWM), in MB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
