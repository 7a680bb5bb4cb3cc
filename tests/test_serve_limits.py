"""`nurture serve` with two gunicorn workers and no Redis: the signup limit holds for the
whole server, not per worker, and the access log names routes, never tokens nor a
webhook's secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nurture.cli import cli
from nurture.settings import DEFAULT_SUBSCRIBE_LIMIT
from tests.conftest import ROOT
from tests.helpers.serve import http, wait_for
from tests.services import free_port

TOKEN = "eyJzIjoxLCJrIjoiYWJjIn0.aw3S6w.secretpart"


def test_two_workers_share_the_signup_limit_and_log_no_tokens(tmp_path, runner):
    assert DEFAULT_SUBSCRIBE_LIMIT.startswith("5 per minute")
    workspace = tmp_path / "crumb"
    assert runner.invoke(cli, ["init", str(workspace)]).exit_code == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_WORKSPACE=str(workspace), NURTURE_BASE_URL=base, PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port), "--workers", "2",
         "--send-interval", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: http(f"{base}/healthz")[0] == 200)
        # both workers up (each boots on its own)
        wait_for(lambda: Path(log.name).read_text().count("Booting worker") >= 2)
        answers = [http(f"{base}/subscribe", {"email": f"p{i}@example.com"})[0]
                   for i in range(12)]  # fmt: skip
        for path in (f"/confirm/{TOKEN}", f"/unsubscribe/{TOKEN}", f"/o/{TOKEN}"):
            assert http(base + path)[0] == 400
        # a provider's webhook secret rides in the query string
        http(f"{base}/webhooks/postmark?token=pmtoken-secret", {"RecordType": "Delivery"})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.seek(0)
        output = log.read()
    assert answers == [200] * 5 + [429] * 7, output
    assert server.returncode == 0, output
    assert "secretpart" not in output and TOKEN not in output
    assert '"GET /confirm/<token> HTTP/1.1" 400' in output
    assert '"GET /unsubscribe/<token> HTTP/1.1" 400' in output
    assert "pmtoken-secret" not in output
    assert '"POST /webhooks/postmark?<redacted> HTTP/1.1"' in output
