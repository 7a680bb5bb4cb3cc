"""An SMTP server that only counts what it accepts, run in a process of its own so it
never shares a GIL with the sender it measures.

    python -m bench.sink PORT

Prints `ready` once it listens; answers each `count` line on stdin with the number
of messages accepted so far; stops at end of input.
"""

from __future__ import annotations

import sys
import threading

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201
        with self.lock:
            self.messages += 1
            self.bytes += len(envelope.content)
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    handler = Counter()
    # A large data size limit: no message of ours is refused for its size.
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(f"{handler.messages} {handler.bytes}", flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
