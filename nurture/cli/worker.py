"""`nurture worker`: Dramatiq's own worker processes, set up for this workspace."""

from __future__ import annotations

import sys

import click

from nurture.cli import cli, command, settings_of
from nurture.queue import QUEUE, run_workers

#: Threads per process: each holds a database connection while it works through a
#: message, and the pool has 15 (store/engine.py: 5, plus 10 overflow).
MAX_THREADS = 15


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
    env_file = ctx.find_root().ensure_object(dict).get("env_file")
    sys.exit(run_workers(settings_of(ctx), processes, threads, queues, env_file))
