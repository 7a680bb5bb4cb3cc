"""`nurture worker` as the benchmark runs it: the same Dramatiq command line, with
`bench.probe` counting where the CPU goes.

    python -m bench.worker PROCESSES THREADS
"""

from __future__ import annotations

import sys

from dramatiq import cli as dramatiq_cli

from nurture.queue import QUEUE, WORKER_SHUTDOWN_TIMEOUT


def main() -> None:
    processes, threads = sys.argv[1], sys.argv[2]
    args = ["bench.probe:setup_worker", "--processes", processes, "--threads", threads,
            "--worker-shutdown-timeout", str(WORKER_SHUTDOWN_TIMEOUT * 1000), "--queues", QUEUE]  # fmt: skip
    sys.exit(dramatiq_cli.main(dramatiq_cli.make_argument_parser().parse_args(args)))


if __name__ == "__main__":
    main()
