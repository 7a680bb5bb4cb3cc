"""A real IMAP server for `bounces fetch`: dovecot started with a config of its own in
a temporary folder (plain auth from a passwd-file, Maildir storage, one free port)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from tests.services import free_port, unavailable

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-secret"

CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  user = {auth_user}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""


class Dovecot:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()

    @property
    def url(self) -> str:
        return f"imap://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX"

    def start(self) -> Dovecot:
        if not os.access(DOVECOT, os.X_OK):
            unavailable("dovecot", f"{DOVECOT} not found")
        for sub in ("run", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        root_run = os.getuid() == 0
        # Dovecot never stores mail as root: as root, the mail belongs to its own user,
        # in a folder that user can reach (pytest's tmp_path is private to root).
        uid, gid = (pwd.getpwnam("dovecot")[2:4]) if root_run else (os.getuid(), os.getgid())
        self.mail = Path(tempfile.mkdtemp(prefix="nurture-imap-"))
        os.chown(self.mail, uid, gid)
        (self.root / "dovecot.conf").write_text(CONFIG.format(
            root=self.root, mail=self.mail, port=self.port, uid=uid, gid=gid,
            internal="dovecot" if root_run else os.environ.get("USER", "nobody"),
            login="dovenull" if root_run else os.environ.get("USER", "nobody"),
            auth_user="root" if root_run else "$default_internal_user",
        ))  # fmt: skip
        # The daemon keeps the descriptors it was given: a file, never a pipe to wait on.
        with (self.root / "start.log").open("w") as out:
            run = subprocess.run([DOVECOT, "-c", str(self.root / "dovecot.conf")],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30)  # fmt: skip
        if run.returncode != 0:
            unavailable("dovecot", (self.root / "start.log").read_text().strip())
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.client():
                    return self
            except Exception as e:  # noqa: BLE001 - not up yet, or refused: keep polling
                if time.monotonic() > deadline:
                    self.stop()
                    log = (
                        (self.root / "dovecot.log").read_text()
                        if (self.root / "dovecot.log").exists()
                        else ""
                    )
                    unavailable("dovecot", f"{e}; {log[-500:]}")
                time.sleep(0.1)

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def deliver(self, raw: bytes) -> None:
        with self.client() as c:
            c.append("INBOX", raw)

    def mark_unseen(self) -> None:
        with self.client() as c:
            c.select_folder("INBOX")
            c.remove_flags(c.search(["ALL"]), [b"\\Seen"])

    def seen_count(self) -> int:
        with self.client() as c:
            c.select_folder("INBOX")
            return len(c.search(["SEEN"]))

    def stop(self) -> None:
        subprocess.run([DOVECOT, "-c", str(self.root / "dovecot.conf"), "stop"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=30)  # fmt: skip
        shutil.rmtree(self.mail, ignore_errors=True)
