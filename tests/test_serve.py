"""`nurture serve` as an operator runs it: one process on a fresh workspace, no cron,
no worker, and a signup reaches its first email in `outbox/`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from nurture.cli import cli
from tests.helpers.serve import http, wait_for
from tests.services import free_port

ROOT = Path(__file__).parent.parent


def emails(outbox: Path) -> list:
    return [
        message_from_bytes(p.read_bytes(), policy=default) for p in sorted(outbox.glob("*.eml"))
    ]


def test_serve_alone_takes_a_signup_to_the_first_email(tmp_path, runner):
    workspace = tmp_path / "crumb"
    assert runner.invoke(cli, ["init", str(workspace)]).exit_code == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_WORKSPACE=str(workspace), NURTURE_BASE_URL=base, PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port),
         "--send-interval", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    outbox = workspace / "outbox"
    try:
        assert wait_for(lambda: http(f"{base}/healthz")[0] == 200)
        status, page = http(f"{base}/subscribe", {"email": "ana@example.com", "first_name": "Ana"})
        assert status == 200 and "Check your inbox" in page

        [confirmation] = wait_for(lambda: emails(outbox))
        text = confirmation.get_body(("plain",)).get_content()
        confirm = re.search(rf"{re.escape(base)}/confirm/[\w.-]+", text).group(0)
        assert http(confirm)[0] == 200
        status, page = http(confirm, {})
        assert status == 200 and "Your first email is on its way" in page

        welcome = wait_for(lambda: emails(outbox)[1:])[0]
        assert welcome["Subject"].startswith("Welcome, Ana")
        assert f"{base}/c/" in welcome.get_body(("html",)).get_content()

        # someone added from another shell: the timer, not a confirmation, sends it
        added = runner.invoke(cli, ["subscribers", "add", "bo@example.com", "--confirmed"],
                              env={"NURTURE_WORKSPACE": str(workspace)})  # fmt: skip
        assert added.exit_code == 0, added.output
        assert wait_for(lambda: [m for m in emails(outbox) if m["To"] == "bo@example.com"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.seek(0)
        output = log.read()
    assert server.returncode == 0, output
    assert "Booting worker" in output and "Traceback" not in output
