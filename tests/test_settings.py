"""Settings as an operator meets them: checked before any work, secrets never echoed."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nurture import settings as settings_module
from nurture.cli import cli
from nurture.errors import ConfigError
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Subscriber

SECRET = "s3cretPassw0rd"


def _run(runner, env, *args):
    result = runner.invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output
    return result


# Secret key --------------------------------------------------------------------------------


def _key_of(workspace: str, barrier, out) -> None:
    settings_module._read_toml(
        Path(workspace)
    )  # warm up: start the race as close to the key as can be
    barrier.wait()
    try:
        out.put(load_settings(workspace, env={}).secret_key)
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.put(f"error: {e}")


def test_concurrent_first_starts_all_get_the_same_complete_key(workspace):
    """Many processes starting at once in a fresh workspace: one key is generated and
    every process reads it whole (an empty or half-written key would sign everything)."""
    ctx = multiprocessing.get_context("fork")
    for _round in range(10):
        (workspace / ".nurture-secret").unlink(missing_ok=True)
        n = 32
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_key_of, args=(str(workspace), barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        keys = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert len(set(keys)) == 1, set(keys)
        [key] = set(keys)
        assert len(key) >= 32 and not key.startswith("error")
        assert (workspace / ".nurture-secret").read_text().strip() == key
        assert stat.S_IMODE((workspace / ".nurture-secret").stat().st_mode) == 0o600
        assert [p.name for p in workspace.iterdir() if p.name.startswith(".nurture-secret.")] == []


def test_an_empty_or_short_key_is_refused_in_one_sentence(runner, workspace):
    env = {"NURTURE_WORKSPACE": str(workspace)}
    (workspace / ".nurture-secret").write_text("")
    result = _run(runner, env, "subscribers", "list")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {workspace / '.nurture-secret'} holds a secret key "
                                    "of 0 characters, fewer than the 32 needed")  # fmt: skip
    assert result.output.count("\n") == 1
    (workspace / ".nurture-secret").unlink()
    result = _run(runner, {**env, "NURTURE_SECRET_KEY": "short-key"}, "subscribers", "list")
    assert result.exit_code == 1
    assert "Error: NURTURE_SECRET_KEY holds a secret key of 9 characters" in result.output
    assert "short-key" not in result.output
    assert not (workspace / "nurture.db").exists()


# Passwords in URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "var, value",
    [
        ("NURTURE_SMTP_URL", f"smtp://apikey:{SECRET}@smtp.example.net:notaport"),
        ("NURTURE_SMTP_URL", f"http://apikey:{SECRET}@smtp.example.net"),
        ("NURTURE_SMTP_URL", f"smtp://apikey:{SECRET}@"),
        ("NURTURE_SMTP_URL", f"smtp://apikey:{SECRET}@host@smtp.example.net:x"),
        ("NURTURE_DATABASE_URL", f"postgresql://nurture:{SECRET}@db.internal:notaport/nurture"),
        ("NURTURE_DATABASE_URL", f"nurture:{SECRET}@db.internal/nurture"),
        ("NURTURE_DATABASE_URL", f"postgresql+nodriver://nurture:{SECRET}@db.internal/nurture"),
        ("NURTURE_REDIS_URL", f"redis://:{SECRET}@cache.internal:notaport/0"),
        ("NURTURE_REDIS_URL", f"http://:{SECRET}@cache.internal/0"),
    ],
)
def test_a_malformed_url_is_named_without_its_password(runner, workspace, var, value):
    result = _run(runner, {"NURTURE_WORKSPACE": str(workspace), var: value}, "subscribers", "list")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {var} ")
    assert SECRET not in result.output
    assert "***" in result.output or "write it as %40" in result.output  # not shown at all
    assert result.output.count("\n") == 1


def test_bad_smtp_port_is_refused_before_any_delivery_is_touched(runner, env, settings):
    assert _run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed").exit_code == 0
    bad = {**env, "NURTURE_SMTP_URL": "smtp://host:notaport"}
    result = _run(runner, bad, "send-due")
    assert result.exit_code == 1
    assert result.output == "Error: NURTURE_SMTP_URL has a port that is not a number: " \
        "smtp://host:notaport\n"  # fmt: skip
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    assert _run(runner, env, "send-due").output == "send-due: 1 due, 1 sent\n"


def test_a_redis_url_that_is_no_url_is_one_sentence(runner, workspace):
    env = {"NURTURE_WORKSPACE": str(workspace), "NURTURE_REDIS_URL": "notredis"}
    for args in (["send-due"], ["validate"], ["worker"]):
        result = _run(runner, env, *args)
        assert result.exit_code == 1
        assert result.output == ("Error: NURTURE_REDIS_URL must start with redis://, rediss:// "
                                 "or unix://, e.g. redis://localhost:6379/0, got notredis\n")  # fmt: skip


def test_database_errors_are_one_line_without_background_link(runner, workspace):
    from tests.services import free_port

    url = f"postgresql://nurture:{SECRET}@127.0.0.1:{free_port()}/nurture"
    env = {"NURTURE_WORKSPACE": str(workspace), "NURTURE_DATABASE_URL": url}
    result = _run(runner, env, "subscribers", "list")
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach NURTURE_DATABASE_URL: ")
    assert "sqlalche.me" not in result.output and "Background" not in result.output
    assert SECRET not in result.output
    assert result.output.count("\n") == 1


# The sender --------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", ["not an address", "Maya hello@crumb.example",
                                    "hello@crumb", "Maya <hello@crumb.example>, b@example.com"])  # fmt: skip
def test_a_malformed_sender_is_refused_before_sending(runner, env, settings, sink, sender):
    assert _run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed").exit_code == 0
    for args in (["validate"], ["send-due"]):
        result = _run(runner, {**env, "NURTURE_FROM": sender}, *args)
        assert result.exit_code == 1
        assert result.output == ("Error: NURTURE_FROM must be one address, optionally with a "
                                 "name, such as 'Crumb & Co <hello@crumb.example>', "
                                 f"got {sender!r}\n")  # fmt: skip
    assert sink.messages == []
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


@pytest.mark.parametrize("sender", ["hello@crumb.example", "Crumb & Co <hello@crumb.example>",
                                    '"Crumb, Co" <hello@crumb.example>'])  # fmt: skip
def test_a_good_sender_goes_out_as_written(runner, env, sink, sender):
    env = {**env, "NURTURE_FROM": sender}
    assert _run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed").exit_code == 0
    assert _run(runner, env, "send-due").exit_code == 0
    [received] = sink.messages
    assert received.message["From"].addresses[0].addr_spec == "hello@crumb.example"


def test_a_sequence_with_a_malformed_from_is_a_validate_error(runner, env, workspace):
    path = workspace / "sequences" / "from-curious-to-customer.yaml"
    good = 'from: "Maya at Crumb & Co <hello@crumb.example>"'
    path.write_text(path.read_text().replace(good, 'from: "Maya hello@crumb.example"'))
    line = path.read_text().splitlines().index('from: "Maya hello@crumb.example"') + 1
    result = _run(runner, env, "validate")
    assert result.exit_code == 1
    assert (f"sequences/from-curious-to-customer.yaml:{line}: from: must be one address, "
            "optionally with a name") in result.output  # fmt: skip


# Outside a workspace -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["send-due"], ["subscribers", "add", "ana@example.com"],
                                  ["validate"], ["stats"], ["db", "upgrade"], ["worker"],
                                  ["subscribers", "list"], ["serve"]])  # fmt: skip
def test_outside_a_workspace_every_command_refuses_and_writes_nothing(runner, tmp_path, args,
                                                                       monkeypatch):  # fmt: skip
    empty = tmp_path / "not-a-workspace"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.delenv("NURTURE_WORKSPACE", raising=False)
    result = _run(runner, {}, *args)
    assert result.exit_code == 1
    assert result.output == ("Error: no workspace here (no sequences/ folder): use --workspace "
                             "or NURTURE_WORKSPACE\n")  # fmt: skip
    assert list(empty.iterdir()) == []
    result = _run(runner, {}, "--workspace", str(empty), *args)
    assert result.exit_code == 1
    assert f"no workspace in {empty} (no sequences/ folder)" in result.output
    assert list(empty.iterdir()) == []


def test_init_help_and_version_need_no_workspace(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NURTURE_WORKSPACE", raising=False)
    assert _run(runner, {}, "--help").exit_code == 0
    assert _run(runner, {}, "--version").exit_code == 0
    assert _run(runner, {}, "send-due", "--help").exit_code == 0
    assert _run(runner, {}, "init", "shop").exit_code == 0
    assert _run(runner, {}, "--workspace", "shop", "validate").exit_code == 0


# Env file ----------------------------------------------------------------------------------


def test_env_file_sits_between_the_environment_and_nurture_toml(workspace, tmp_path):
    (workspace / "nurture.toml").write_text(
        'from = "Toml <toml@example.com>"\ntimezone = "Asia/Tokyo"\nmax_per_day = 3\n'
    )
    path = tmp_path / "nurture.env"
    path.write_text(
        "# settings for cron\n\n"
        "NURTURE_FROM='File <file@example.com>'\n"
        'export NURTURE_TIMEZONE="Europe/Paris"\n'
        "NURTURE_API_KEY = key#not-a-comment\n"
        "OTHER=ignored\n"
    )
    s = load_settings(workspace, env={"NURTURE_TIMEZONE": "America/Lima"}, env_file=path)
    assert s.sender == "File <file@example.com>"  # the file over nurture.toml
    assert s.timezone == "America/Lima"  # the environment over the file
    assert s.max_per_day == 3  # nurture.toml where neither says
    assert s.api_key == "key#not-a-comment"
    named = load_settings(workspace, env={"NURTURE_ENV_FILE": str(path)})
    assert named.sender == "File <file@example.com>"


@pytest.mark.parametrize("line, message", [
    (f"NURTURE_SMTP_URL smtp://u:{SECRET}@host", "expected KEY=VALUE"),
    (f"NURTURE_SMTP_URL='smtp://u:{SECRET}@host", "the value of NURTURE_SMTP_URL opens a quote"),
    ("1NURTURE=x", "expected KEY=VALUE"),
])  # fmt: skip
def test_a_malformed_env_file_line_is_named_by_path_and_line(runner, workspace, tmp_path, line,
                                                             message):  # fmt: skip
    path = tmp_path / "nurture.env"
    path.write_text(f"# cron\nNURTURE_FROM=a@example.com\n{line}\n")
    env = {"NURTURE_WORKSPACE": str(workspace)}
    result = _run(runner, env, "--env-file", str(path), "send-due")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}:3: {message}")
    assert SECRET not in result.output and result.output.count("\n") == 1
    missing = _run(runner, env, "--env-file", str(tmp_path / "nope.env"), "send-due")
    assert missing.exit_code == 1
    assert f"the env file {tmp_path / 'nope.env'} does not exist" in missing.output


# SQLite files ------------------------------------------------------------------------------


def test_the_sqlite_database_and_its_wal_are_private(runner, workspace):
    env = {"NURTURE_WORKSPACE": str(workspace)}
    old = os.umask(0o022)
    try:
        assert (
            _run(runner, env, "subscribers", "add", "a@example.com", "--confirmed").exit_code == 0
        )
    finally:
        os.umask(old)
    files = [workspace / n for n in ("nurture.db", "nurture.db-wal", "nurture.db-shm")]
    assert all(f.exists() for f in files), list(workspace.iterdir())
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {
        f.name: "0o600" for f in files
    }
    settings = load_settings(workspace, env={})
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_a_database_failure_mid_command_is_one_line(runner, workspace):
    """A damaged database (here a table gone) is the operator's to fix: one line, no
    traceback and no SQLAlchemy statement dump or background link."""
    import sqlite3

    env = {"NURTURE_WORKSPACE": str(workspace)}
    assert _run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed").exit_code == 0
    from nurture.store import engine as db

    db.dispose_all()
    with sqlite3.connect(workspace / "nurture.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("DROP TABLE tags")
    result = _run(runner, env, "subscribers", "untag", "ana@example.com", "vip")
    assert result.exit_code == 1
    assert result.output == "Error: the database failed: no such table: tags\n"
    assert "sqlalche.me" not in result.output and "[SQL" not in result.output


@pytest.mark.parametrize("rate", ["5 per minute; 30 per hour", "5/minute", "10 per 2 minutes",
                                  "100/day, 5/second", "1 per 1 second | 2 per hour",
                                  "lots", "5 per fortnight", "5 per minute;"])  # fmt: skip
def test_the_signup_limit_is_checked_as_the_limiter_parses_it(workspace, rate):
    """Settings check the rate without importing `limits`; both must agree."""
    from limits import parse_many

    try:
        parse_many(rate)
        valid = True
    except ValueError:
        valid = False
    env = {"NURTURE_SUBSCRIBE_LIMIT": rate}
    if valid:
        assert load_settings(workspace, env=env).subscribe_limit == rate
    else:
        with pytest.raises(ConfigError, match="NURTURE_SUBSCRIBE_LIMIT must be a rate"):
            load_settings(workspace, env=env)


# Misspelt names, exposed env files, Heroku-style URLs ------------------------------------


def test_a_misspelt_setting_is_a_validate_error_and_a_warning_elsewhere(runner, workspace):
    toml = workspace / "nurture.toml"
    toml.write_text(toml.read_text() + "max_per_dya = 2\n[fields]\ncompany = 'text'\n")
    env = {"NURTURE_WORKSPACE": str(workspace)}
    checked = _run(runner, env, "validate")
    assert checked.exit_code == 1
    assert "nurture.toml:3: unknown setting 'max_per_dya' (did you mean 'max_per_day'?)" in (
        checked.output
    )
    assert checked.output.count("max_per_dya") == 1
    listed = _run(runner, env, "subscribers", "list")
    assert listed.exit_code == 0
    assert ("warning: nurture.toml: unknown setting 'max_per_dya' (did you mean 'max_per_day'?)"
            in listed.output)  # fmt: skip


def test_a_misspelt_variable_is_a_warning_from_the_environment_or_env_file(
    runner, workspace, tmp_path
):
    path = tmp_path / "nurture.env"
    path.write_text("export NURTURE_MAX_PER_DYA=2\n")
    path.chmod(0o600)
    env = {"NURTURE_WORKSPACE": str(workspace), "NURTURE_SEND_RTAE": "5",
           "NURTURE_TEST_PG": "postgresql://x", "NURTURE_ENV_FILE": str(path)}  # fmt: skip
    result = _run(runner, env, "subscribers", "list")
    assert result.exit_code == 0
    assert ("warning: unknown variable NURTURE_SEND_RTAE (did you mean 'NURTURE_SEND_RATE'?) "
            "is ignored") in result.output  # fmt: skip
    assert "NURTURE_MAX_PER_DYA (did you mean 'NURTURE_MAX_PER_DAY'?)" in result.output
    assert "NURTURE_TEST_PG" not in result.output and "ENV_FILE" not in result.output
    assert "readable by others" not in result.output


def test_an_env_file_others_can_read_is_warned_about(runner, workspace, tmp_path):
    path = tmp_path / "nurture.env"
    path.write_text(f"export NURTURE_SMTP_URL=smtp://u:{SECRET}@localhost:2525\n")
    path.chmod(0o644)
    env = {"NURTURE_WORKSPACE": str(workspace)}
    result = _run(runner, env, "--env-file", str(path), "subscribers", "list")
    assert result.exit_code == 0
    assert (f"warning: the env file {path} is readable by others (mode 644) and holds secrets: "
            f"chmod 600 {path}") in result.output  # fmt: skip
    assert SECRET not in result.output


def test_a_heroku_style_postgres_url_is_accepted(runner, workspace, pg_url):
    heroku = pg_url.replace("postgresql://", "postgres://", 1)
    assert load_settings(workspace, env={"NURTURE_DATABASE_URL": heroku}).database_url == pg_url
    env = {"NURTURE_WORKSPACE": str(workspace), "NURTURE_DATABASE_URL": heroku}
    added = _run(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    assert added.exit_code == 0, added.output
    assert "ana@example.com" in _run(runner, env, "subscribers", "list").output


def test_a_setting_written_twice_in_nurture_toml_is_named_at_its_line(workspace):
    toml = workspace / "nurture.toml"
    toml.write_text(toml.read_text() + '\n[sunset]\nthen = "unsubscribe"\nthen = "unsubscribe"\n')
    line = toml.read_text().splitlines().index('then = "unsubscribe"') + 2  # the second one
    with pytest.raises(ConfigError) as caught:
        load_settings(workspace=workspace, env={})
    assert str(caught.value) == (
        f"nurture.toml:{line}: a key is written twice (or a table given twice): keep one"
    )
