"""The documented crontab line works as written, run the way cron runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nurture.cli import cli

ROOT = Path(__file__).parent.parent
#: The venv's console script, as an operator's crontab names it.
SCRIPT = Path(sys.executable).parent / "nurture"
KEY = "k" * 48


def cron_lines() -> dict[str, str]:
    """Every crontab line the docs and `send-due --help` give, by where it is written."""
    from click.testing import CliRunner

    sources = {
        "README.md": (ROOT / "README.md").read_text(),
        "docs/distributed.md": (ROOT / "docs" / "distributed.md").read_text(),
        "send-due --help": CliRunner().invoke(cli, ["send-due", "--help"]).output,
    }
    found = {}
    for where, text in sources.items():
        lines = re.findall(r"^\s*(\* \* \* \* \*\s+.+?)\s*$", text, re.M)
        assert lines, f"{where} gives no crontab line"
        for i, line in enumerate(lines):
            found[f"{where} #{i + 1}"] = line
    return found


def run_as_cron(
    line: str, *, workspace: Path, env_file: Path, home: Path
) -> subprocess.CompletedProcess:
    """Cron's way: /bin/sh -c with only PATH=/usr/bin:/bin and HOME, in HOME, no profile."""
    command = line.split(None, 5)[5]
    command = (command.replace("/srv/crumb/.venv/bin/nurture", str(SCRIPT))
               .replace("/srv/crumb", str(workspace)).replace("/etc/nurture.env", str(env_file)))  # fmt: skip
    return subprocess.run(
        ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "/bin/sh", "-c", command],
        cwd=home, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("where", list(cron_lines()))
def test_the_documented_cron_line_sends_with_the_env_files_settings(where, runner, env,
                                                                    workspace, sink, tmp_path):  # fmt: skip
    if not SCRIPT.exists():
        pytest.fail(f"no console script at {SCRIPT}: install with pip install -e .")
    line = cron_lines()[where]
    home, etc = tmp_path / "home", tmp_path / "etc"
    home.mkdir(), etc.mkdir()
    env_file = etc / "nurture.env"
    env_file.write_text(
        "# read by nurture itself: cron loads no profile\n"
        f"NURTURE_DATABASE_URL={env['NURTURE_DATABASE_URL']}\n"
        f"NURTURE_SMTP_URL='{sink.url}'\n"
        'NURTURE_BASE_URL="https://crumb.example"\n'
        f"NURTURE_SECRET_KEY={KEY}\n"
    )
    os.chmod(env_file, 0o600)
    added = runner.invoke(cli, ["subscribers", "add", "ana@example.com", "--confirmed"],
                          env={**env, "NURTURE_SECRET_KEY": KEY})  # fmt: skip
    assert added.exit_code == 0, added.output

    ran = run_as_cron(line, workspace=workspace, env_file=env_file, home=home)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == "send-due: 1 due, 1 sent\n"
    [received] = sink.to("ana@example.com")
    assert received.message["Subject"].startswith("Welcome, friend")
    assert "https://crumb.example/unsubscribe/" in received.message["List-Unsubscribe"]
    assert list(home.iterdir()) == []  # no fresh nurture.db, no secret where cron started
    if env["NURTURE_DATABASE_URL"].startswith("postgresql"):
        assert not (workspace / "nurture.db").exists()
    assert not (workspace / ".nurture-secret").exists()
