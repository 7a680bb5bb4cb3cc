"""`nurture worker`: Dramatiq's own worker processes, set up for this workspace."""

from __future__ import annotations

import os
import sys

import click
import redis
from dramatiq import cli as dramatiq_cli

from nurture.cli import _settings, cli, command
from nurture.errors import ConfigError
from nurture.queue import QUEUE
from nurture.redisconn import redis_client
from nurture.store.engine import dispose_all, get_engine

#: Threads per process: each holds a database connection while it works through a
#: message, and the pool has 15 (db.py: 5, plus 10 overflow).
MAX_THREADS = 15
#: Seconds a stopping worker waits for the sends in progress (each hands the rest of its
#: message back after its current email, so this is rarely reached).
SHUTDOWN_TIMEOUT = 60


@command(cli, "worker")
@click.option("--processes", "-p", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this host.")  # fmt: skip
@click.option("--threads", "-t", type=click.IntRange(1, MAX_THREADS), default=8, show_default=True,
              help="Threads per process, each with its own database connection; SMTP "
                   "connections stay within NURTURE_SMTP_CONCURRENCY.")  # fmt: skip
@click.option("--queues", "-Q", multiple=True, metavar="NAME",
              help=f"Only these queues (repeat for more; default: {QUEUE}).")  # fmt: skip
@click.pass_context
def worker(ctx: click.Context, processes: int, threads: int, queues: tuple[str, ...]) -> None:
    """Run Dramatiq workers that send what `send-due` enqueues, on NURTURE_REDIS_URL.

    Run it on as many hosts as you like, all with the same NURTURE_DATABASE_URL
    (PostgreSQL) and NURTURE_REDIS_URL. SIGTERM stops it cleanly: each thread finishes
    the email it is sending and hands the rest back to the queue.

    \b
    Example:
      export NURTURE_DATABASE_URL=postgresql://nurture@db.internal/nurture
      export NURTURE_REDIS_URL=redis://cache.internal:6379/0
      nurture worker --processes 2 --threads 8
    """
    settings = _settings(ctx)
    if not settings.redis_url:
        raise ConfigError(
            "NURTURE_REDIS_URL is not set: `nurture worker` needs Redis, e.g. "
            "NURTURE_REDIS_URL=redis://localhost:6379/0 (without it, send-due sends by itself)"
        )
    client = redis_client(settings.redis_url, 3)
    try:
        client.ping()
    except redis.RedisError as e:
        raise ConfigError(f"cannot reach NURTURE_REDIS_URL: {e}") from None
    finally:
        client.close()
    get_engine(settings)  # the database answers and is up to date, or a clear error now
    dispose_all()  # worker processes are forked: each must open its own connections
    # Dramatiq's processes load the settings again, from the environment: the same
    # workspace and env file as this command's.
    os.environ["NURTURE_WORKSPACE"] = str(settings.workspace)
    env_file = ctx.find_root().ensure_object(dict).get("env_file")
    if env_file:
        os.environ["NURTURE_ENV_FILE"] = str(env_file.resolve())
    args = ["nurture.queue:setup_worker", "--processes", str(processes), "--threads", str(threads),
            "--worker-shutdown-timeout", str(SHUTDOWN_TIMEOUT * 1000),
            "--queues", *(queues or (QUEUE,))]  # fmt: skip
    sys.exit(dramatiq_cli.main(dramatiq_cli.make_argument_parser().parse_args(args)))
