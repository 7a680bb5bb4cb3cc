"""A PostgreSQL cluster of a test's own (initdb into a temporary folder, its own port), so
a test can restart or stop the server without touching anyone else's databases."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.services import free_port, unavailable


class Cluster:
    """initdb, start, `pg_ctl restart -m fast`, stop. Run as the `postgres` OS user when
    the tests run as root (initdb refuses root), in a folder that user owns."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            unavailable("PostgreSQL server binaries", "no /usr/lib/postgresql/*/bin/pg_ctl")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="nurture-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stderr}\n{log}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        self._start()
        return self

    def _start(self) -> None:
        # A wal_writer_delay of its maximum: commits that do not wait for the disk stay in
        # the server's memory for up to 10 s, where a crash loses them.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=100 -c wal_writer_delay=10s")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "start")  # fmt: skip

    def crash(self) -> None:
        """What a crash of the server does (`pg_ctl stop -m immediate`: no checkpoint, and
        what waits in memory to be written is lost), then a start with crash recovery."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._start()

    def restart(self) -> None:
        """What an operator's `pg_ctl restart -m fast` does: every session is cut."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w",
                  "restart")  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
