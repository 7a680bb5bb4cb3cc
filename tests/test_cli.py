"""The command line as an operator and a marketer use it."""

from __future__ import annotations

import csv
import email
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from sqlalchemy import func, select

from nurture.cli import cli
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Enrollment, Subscriber

ROOT = Path(__file__).parent.parent


def invoke(runner, env, *args, input=None):
    return runner.invoke(cli, list(args), env=env, input=input)


def all_commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


@pytest.mark.parametrize("path", [p for p, _ in all_commands(cli)], ids=" ".join)
def test_every_command_has_help_with_an_example(runner, path):
    result = runner.invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"nurture {' '.join(path)} --help has no example"


def test_invalid_email_is_refused_and_nothing_is_stored(runner, env, settings):
    result = invoke(runner, env, "subscribers", "add", "not-an-address")
    assert result.exit_code == 1
    assert "Error: 'not-an-address' is not a valid email address" in result.output
    assert "Traceback" not in result.output
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_pending_subscriber_gets_a_confirmation_email(runner, env, sink):
    result = invoke(runner, env, "subscribers", "add", "Ana@Example.com", "--first-name", " Ana ")
    assert result.exit_code == 0, result.output
    assert "pending" in result.output
    [received] = sink.to("ana@example.com")
    msg = received.message
    assert msg["Subject"] == "Please confirm your subscription"
    text = msg.get_body(("plain",)).get_content()
    assert "https://crumb.example/confirm/" in text
    # a second add neither duplicates nor re-sends
    result = invoke(runner, env, "subscribers", "add", "ana@example.com")
    assert "already a subscriber (pending)" in result.output
    assert len(sink.messages) == 1


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(runner, env, settings, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(
        "email,first_name,timezone,tags\n"
        "ana@example.com,Ana,Europe/Paris,bakery vip\n"
        "broken-address,Bo,,\n"
        "cy@example.com,Cy,Mars/Olympus,\n"
        "di@example.com,Di,,\n"
        "ana@example.com,Ana again,,\n"
    )
    result = invoke(runner, env, "subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 0, result.output
    assert "people.csv:3: 'broken-address' is not a valid email address" in result.output
    assert "people.csv:4: 'Mars/Olympus' is not an IANA time zone" in result.output
    assert "Imported 2 new, 1 already known, 2 bad rows." in result.output
    with session_scope(settings) as session:
        subs = {s.email: s for s in session.scalars(select(Subscriber))}
        assert set(subs) == {"ana@example.com", "di@example.com"}
        assert subs["ana@example.com"].status == "active"
        assert subs["ana@example.com"].source == "import"
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 2

    out = tmp_path / "out.csv"
    result = invoke(runner, env, "subscribers", "export", str(out))
    assert result.exit_code == 0 and "Exported 2 subscribers" in result.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["email"], r["tags"], r["timezone"]) for r in rows] == [
        ("ana@example.com", "bakery vip", "Europe/Paris"),
        ("di@example.com", "", ""),
    ]


def test_import_without_consent_sends_confirmations(runner, env, sink, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email\nana@example.com\nbo@example.com\n")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    assert sorted(r for m in sink.messages for r in m.recipients) == [
        "ana@example.com", "bo@example.com",
    ]  # fmt: skip
    assert {m.message["Subject"] for m in sink.messages} == {"Please confirm your subscription"}


def test_import_of_a_file_without_email_column_is_a_clear_error(runner, env, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("name\nAna\n")
    result = invoke(runner, env, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert "must name the columns and include 'email'" in result.output


def test_forget_erases_and_keeps_the_address_suppressed(runner, env, settings):
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    invoke(runner, env, "send-due")
    result = invoke(runner, env, "subscribers", "forget", "ana@example.com", "--yes")
    assert result.exit_code == 0, result.output
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    result = invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    assert result.exit_code == 1 and "suppressed" in result.output


def test_show_of_unknown_subscriber_is_a_clear_error(runner, env):
    result = invoke(runner, env, "subscribers", "show", "nobody@example.com")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no subscriber nobody@example.com"


def test_preview_renders_every_format(runner, env):
    args = ["preview", "from-curious-to-customer", "welcome"]
    text = invoke(runner, env, *args)
    assert text.exit_code == 0, text.output
    assert text.output.startswith("Subject: Welcome, Sam: marketing and sales are two jobs")
    html = invoke(runner, env, *args, "--format", "html").output
    assert html.lstrip().lower().startswith("<!doctype html>") and 'style="' in html
    eml = email.message_from_string(invoke(runner, env, *args, "--format", "eml").output)
    assert eml.get_content_type() == "multipart/alternative"
    bad = invoke(runner, env, "preview", "from-curious-to-customer", "nope")
    assert bad.exit_code == 1 and "has no step 'nope'" in bad.output


def test_simulate_shows_the_timeline_and_touches_no_data(runner, env, workspace):
    result = invoke(runner, env, "simulate", "from-curious-to-customer", "--days", "45",
                    "--timezone", "America/New_York")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # a quiet reader: six education emails, the sales gate times out, the extra branch
    assert len(lines) == 1 + 6 + 1 + 2
    assert lines[1].split()[:1] == ["0"] and "welcome" in lines[1]
    assert "[skipped: gate timed out after 1w (needs ready, score 0 of 6): on to more-stories]" \
        in lines[7]  # fmt: skip
    assert "small-wins" in lines[-1]
    assert not (workspace / "outbox").exists()
    db_file = Path(env["NURTURE_DATABASE_URL"].removeprefix("sqlite:///"))
    if env["NURTURE_DATABASE_URL"].startswith("sqlite"):
        assert not db_file.exists()


def test_simulate_plays_events_through_the_gates(runner, env):
    result = invoke(runner, env, "simulate", "from-curious-to-customer",
                    "--events", "click:welcome@3d,event:pricing_viewed@4d")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "click:welcome" in out and "became sales-ready (score 13)" in out
    assert "lets-talk" in out and "Want a second pair of eyes on this, Sam?" in out
    assert "more-stories" in out
    assert "[skipped: gate closed (already sales-ready: score 13, ready at 6)]" in out
    bad = invoke(runner, env, "simulate", "from-curious-to-customer", "--events", "click:nope@1d")
    assert bad.exit_code == 1 and "has no step 'nope'" in bad.output


def test_db_upgrade_is_idempotent(runner, env):
    first = invoke(runner, env, "db", "upgrade")
    second = invoke(runner, env, "db", "upgrade")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "already up to date" in second.output


def test_settings_environment_wins_and_errors_name_the_variable(workspace):
    (workspace / "nurture.toml").write_text('from = "A <a@example.com>"\nmax_per_day = 2\n')
    s = load_settings(workspace, env={"NURTURE_FROM": "B <b@example.com>"})
    assert s.sender == "B <b@example.com>" and s.max_per_day == 2
    for var, value in [("NURTURE_SEND_RATE", "fast"), ("NURTURE_TIMEZONE", "Moon/Base"),
                       ("NURTURE_SMTP_URL", "http://x"), ("NURTURE_TRACKING", "maybe")]:  # fmt: skip
        with pytest.raises(Exception, match=var):
            load_settings(workspace, env={var: value})


def test_secret_key_is_generated_once_and_private(workspace):
    first = load_settings(workspace, env={}).secret_key
    second = load_settings(workspace, env={}).secret_key
    path = workspace / ".nurture-secret"
    assert first == second and len(first) > 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_settings(workspace, env={"NURTURE_SECRET_KEY": "x" * 40}).secret_key == "x" * 40


def test_init_works_from_an_installed_wheel_outside_a_checkout(tmp_path):
    """`pip install .` ships the example workspace inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(wheel_dir), str(ROOT)], check=True)  # fmt: skip
    [wheel] = wheel_dir.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("NURTURE_WORKSPACE", None)
    run = subprocess.run([sys.executable, "-m", "nurture", "init", "shop"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    shop = tmp_path / "shop"
    assert (shop / "sequences" / "from-curious-to-customer.yaml").exists()
    assert (shop / "templates" / "email" / "_layout.html").exists()
    assert (shop / "newsletters" / "2026-12-monthly.md").exists()
    check = subprocess.run([sys.executable, "-m", "nurture", "validate"], cwd=shop, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    again = subprocess.run([sys.executable, "-m", "nurture", "init", "shop"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 1 and "already holds a workspace" in again.stderr


def test_subject_is_plain_text_not_html(runner, env, workspace, sink):
    """A name like O'Brien & Co arrives as written, in the subject and the text part."""
    result = invoke(runner, env, "subscribers", "add", "ob@example.com", "--confirmed",
                    "--first-name", "O'Brien & Co")  # fmt: skip
    assert result.exit_code == 0, result.output
    invoke(runner, env, "send-due")
    [received] = sink.to("ob@example.com")
    assert received.message["Subject"] == "Welcome, O'Brien & Co: marketing and sales are two jobs"
    assert "Hi O'Brien & Co," in received.message.get_body(("plain",)).get_content()
    html = received.message.get_body(("html",)).get_content()
    assert "Hi O&#39;Brien &amp; Co," in html and "O'Brien & Co" not in html  # escaped


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(p) for p, _ in all_commands(cli) if f"nurture {' '.join(p)}" not in readme]
    assert missing == []


def test_export_reads_in_chunks_and_keeps_each_persons_tags(runner, env, tmp_path, monkeypatch):
    """Chunk boundaries lose no one and mix no one's tags with another's."""
    monkeypatch.setattr("nurture.reports.directory.EXPORT_CHUNK", 2)
    for n in range(5):
        tags = [f"t{n}", "all"] if n % 2 == 0 else []
        args = ["subscribers", "add", f"p{n}@example.com", "--confirmed"]
        assert invoke(runner, env, *args, *(x for t in tags for x in ("--tag", t))).exit_code == 0
    out = tmp_path / "out.csv"
    result = invoke(runner, env, "subscribers", "export", str(out))
    assert result.exit_code == 0 and "Exported 5 subscribers" in result.output
    rows = [(r["email"], r["tags"]) for r in csv.DictReader(out.open())]
    assert rows == [("p0@example.com", "all t0"), ("p1@example.com", ""),
                    ("p2@example.com", "all t2"), ("p3@example.com", ""),
                    ("p4@example.com", "all t4")]  # fmt: skip


def test_the_readme_tour_shows_what_its_commands_print(runner, tmp_path):
    """The tour runs in a workspace of its own, so its output holds after `make demo`
    added ana@example.com to the repository's."""
    block = (ROOT / "README.md").read_text().split("## A five-minute tour")[1]
    block = block.split("```console\n")[1].split("```")[0]
    shop = tmp_path / "shop"
    demo = tmp_path / "demo"  # what `make demo` leaves in a workspace
    assert runner.invoke(cli, ["init", str(demo)]).exit_code == 0
    env = {"NURTURE_WORKSPACE": str(demo), "NURTURE_SMTP_URL": ""}
    runner.invoke(cli, ["subscribers", "add", "ana@example.com", "--confirmed"], env=env)
    runner.invoke(cli, ["send-due"], env=env)
    checked = 0
    lines = block.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("$ nurture init"):
            assert runner.invoke(cli, ["init", str(shop)]).exit_code == 0
        elif line.startswith(("$ nurture validate", "$ nurture subscribers add",
                              "$ nurture send-due")):  # fmt: skip
            result = runner.invoke(cli, line[len("$ nurture ") :].split(),
                                   env={"NURTURE_WORKSPACE": str(shop)})  # fmt: skip
            assert result.output.strip() == lines[n + 1], line
            checked += 1
    assert checked == 3
    assert [p.name.split("-", 1)[1] for p in (shop / "outbox").iterdir()] == ["bo@example.com.eml"]
