"""DKIM: a key made by `nurture dkim keygen`, every email signed with it, the signature
verified by dkimpy against a real DNS server; the settings checked where they are read."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy

import dkim
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dkim.crypto import parse_pem_private_key, parse_public_key
from freezegun import freeze_time

from nurture.cli import cli
from nurture.delivery.dkim import keygen
from nurture.delivery.mime import feedback_id
from nurture.doctor.dns import dkimpy_lookup, resolver_for
from nurture.settings import load_settings
from tests.conftest import ROOT
from tests.helpers.deliverability import LocalDns, dkim_strings, good_records

DOMAIN = "crumb.example"


def invoke(runner: CliRunner, env: dict[str, str], *args: str):
    return runner.invoke(cli, list(args), env=env)


@pytest.fixture
def key(tmp_path):
    return keygen(tmp_path / "dkim.pem", "nurture", DOMAIN)


@pytest.fixture
def dkim_env(env, key):
    return env | {
        "NURTURE_DKIM_SELECTOR": "nurture",
        "NURTURE_DKIM_DOMAIN": DOMAIN,
        "NURTURE_DKIM_KEY": str(key.path),
    }


def test_keygen_writes_a_private_key_and_prints_the_record_to_publish(runner, tmp_path):
    out = tmp_path / "mail.pem"
    result = runner.invoke(cli, ["dkim", "keygen", "--selector", "mail", "--domain", DOMAIN,
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    line = next(x for x in result.output.splitlines() if "IN TXT" in x)
    assert line.startswith('mail._domainkey.crumb.example. IN TXT ( "')
    strings = re.findall(r'"([^"]*)"', line)
    assert all(len(s) <= 255 for s in strings) and len(strings) >= 2
    value = "".join(strings)
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = parse_public_key(base64.b64decode(value.split("p=")[1]))
    private = parse_pem_private_key(out.read_bytes())
    assert public["modulus"] == private["modulus"] and private["modulus"].bit_length() == 2048
    again = runner.invoke(cli, ["dkim", "keygen", "--domain", DOMAIN, "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_a_sent_email_is_signed_and_verifies_against_the_published_key(runner, dkim_env, sink, key):
    invoke(runner, dkim_env, "subscribers", "add", "ana@example.com", "--confirmed")
    assert invoke(runner, dkim_env, "send-due").exit_code == 0
    [received] = sink.to("ana@example.com")
    with LocalDns(good_records(DOMAIN, key)) as server:
        settings = load_settings(env=dkim_env | {"NURTURE_DNS_SERVER": server.address})
        lookup = dkimpy_lookup(resolver_for(settings))
        assert dkim.verify(received.data, dnsfunc=lookup)
        tampered = received.data.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <x", 1)
        assert not dkim.verify(tampered, dnsfunc=lookup)
        head, blank, body = received.data.partition(b"\r\n\r\n")
        assert b"Welcome" in body
        assert not dkim.verify(head + blank + body.replace(b"Welcome", b"Welcame", 1),
                               dnsfunc=lookup)  # fmt: skip
    msg = message_from_bytes(received.data, policy=default_policy)
    tags = dict(t.strip().split("=", 1) for t in str(msg["DKIM-Signature"]).split(";"))
    assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (DOMAIN, "nurture", "rsa-sha256",
                                                            "relaxed/relaxed")  # fmt: skip
    signed = {h.strip() for h in tags["h"].split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post", "list-id", "feedback-id", "mime-version",
            "content-type"} <= signed  # fmt: skip


def test_the_feedback_id_names_step_sequence_kind_and_sender(runner, env, sink):
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    invoke(runner, env, "send-due")
    [received] = sink.to("ana@example.com")
    assert "DKIM-Signature" not in received.message  # off unless configured
    parts = received.message["Feedback-ID"].split(":")
    assert parts[1:] == ["from-curious-to-customer", "sequence", "crumb-example"]
    assert parts[0] == "welcome"


def test_dkim_settings_are_all_or_none_and_the_key_must_be_readable(runner, env, tmp_path):
    half = env | {"NURTURE_DKIM_SELECTOR": "nurture"}
    result = invoke(runner, half, "validate")
    assert result.exit_code == 1
    assert ("DKIM signing needs NURTURE_DKIM_SELECTOR, NURTURE_DKIM_DOMAIN and NURTURE_DKIM_KEY "
            "together: NURTURE_DKIM_DOMAIN and NURTURE_DKIM_KEY not set") in result.output  # fmt: skip
    assert "Traceback" not in result.output
    full = half | {"NURTURE_DKIM_DOMAIN": DOMAIN, "NURTURE_DKIM_KEY": str(tmp_path / "none.pem")}
    result = invoke(runner, full, "validate")
    assert result.exit_code == 1 and "NURTURE_DKIM_KEY: cannot read" in result.output
    (tmp_path / "bad.pem").write_text("not a key\n")
    result = invoke(runner, full | {"NURTURE_DKIM_KEY": str(tmp_path / "bad.pem")}, "validate")
    assert result.exit_code == 1 and "holds no PEM RSA private key" in result.output


def test_validate_rejects_a_key_that_does_not_parse_and_warns_of_misalignment(
    runner, dkim_env, tmp_path
):
    assert invoke(runner, dkim_env, "validate").exit_code == 0
    other = dkim_env | {"NURTURE_DKIM_DOMAIN": "mailer.example"}
    result = invoke(runner, other, "validate")
    assert result.exit_code == 0
    assert "NURTURE_DKIM_DOMAIN mailer.example does not align with the From domain" in (
        result.output
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    result = invoke(runner, dkim_env | {"NURTURE_DKIM_KEY": str(broken)}, "validate")
    assert result.exit_code == 1 and "is not a usable RSA private key" in result.output


def test_the_record_helper_splits_like_a_zone_file(key):
    assert "".join(dkim_strings(key)) == key.txt_value


def test_the_feedback_id_keeps_googles_form_whatever_the_names():
    assert feedback_id(("week 1: hello", "news", "broadcast"), "a.io") == (
        "week-1-hello:news:broadcast:a-io-"
    )
    long = feedback_id(("s", "q", "sequence"), "newsletter.crumb-and-co.example")
    assert long.split(":")[-1] == "newsletter-crum" and long.count(":") == 3


def test_confirmations_and_newsletters_are_signed_in_the_same_place(
    runner, dkim_env, sink, key, tmp_path
):
    people = tmp_path / "people.csv"
    people.write_text("email\nbo@example.com\n")
    assert invoke(runner, dkim_env, "subscribers", "import", str(people)).exit_code == 0
    invoke(runner, dkim_env, "subscribers", "add", "maya@crumb.example", "--confirmed")
    issue = ROOT / "newsletters" / "2026-12-monthly.md"
    result = invoke(
        runner, dkim_env, "broadcast", "send", str(issue), "--test-to", "maya@crumb.example"
    )
    assert result.exit_code == 0, result.output
    [confirmation] = sink.to("bo@example.com")
    [newsletter] = sink.to("maya@crumb.example")
    assert newsletter.message["Feedback-ID"].split(":")[1:] == [
        "newsletter", "broadcast", "crumb-example",
    ]  # fmt: skip
    with LocalDns(good_records(DOMAIN, key)) as server:
        settings = load_settings(env=dkim_env | {"NURTURE_DNS_SERVER": server.address})
        lookup = dkimpy_lookup(resolver_for(settings))
        assert dkim.verify(confirmation.data, dnsfunc=lookup)
        assert dkim.verify(newsletter.data, dnsfunc=lookup)


def test_the_signature_is_byte_for_byte_the_one_dkimpy_makes(runner, dkim_env, sink, key):
    invoke(runner, dkim_env, "subscribers", "add", "ana@example.com", "--confirmed")
    assert invoke(runner, dkim_env, "send-due").exit_code == 0
    [received] = sink.to("ana@example.com")
    first = re.match(rb"DKIM-Signature:.*?\r\n(?![ \t])", received.data, re.DOTALL)
    assert first is not None
    header, message = first[0], received.data[first.end() :]
    second = int(re.search(rb"\bt=([0-9]+);", header)[1])
    with freeze_time(datetime.fromtimestamp(second, UTC)):
        expected = dkim.sign(
            message, b"nurture", DOMAIN.encode(), key.path.read_bytes(),
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"rsa-sha256",
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                             b"list-unsubscribe", b"list-unsubscribe-post", b"list-id",
                             b"feedback-id", b"mime-version", b"content-type"],
        )  # fmt: skip
    assert header == expected


def _ec_key(path):
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    path.write_bytes(pem)


def _short_rsa_key(path):
    path.write_bytes(subprocess.run(["openssl", "genrsa", "512"], check=True,
                                    capture_output=True).stdout)  # fmt: skip


@pytest.mark.parametrize(("make", "reason"), [
    (_ec_key, "(EC keys do not sign rsa-sha256; make one with `nurture dkim keygen`)"),
    (_short_rsa_key, "(it has 512 bits and receivers ignore signatures under 1024;"),
])  # fmt: skip
def test_a_key_that_cannot_make_a_valid_signature_is_refused_and_nothing_goes_unsigned(
    runner, dkim_env, sink, tmp_path, make, reason
):
    bad = tmp_path / "bad.pem"
    make(bad)
    env = dkim_env | {"NURTURE_DKIM_KEY": str(bad)}
    result = invoke(runner, env, "validate")
    assert result.exit_code == 1
    assert f"NURTURE_DKIM_KEY: {bad} is not a usable RSA private key {reason}" in result.output
    invoke(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    result = invoke(runner, env, "send-due")  # kept for when the key is fixed, never unsigned
    assert "Traceback" not in result.output and "1 retry" in result.output
    assert sink.to("ana@example.com") == []


def _git(cwd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_keygen_in_a_workspace_writes_a_key_git_ignores_and_warns_where_git_would_commit_it(
    runner, tmp_path, monkeypatch
):
    workspace = tmp_path / "shop"
    assert runner.invoke(cli, ["init", str(workspace)]).exit_code == 0
    _git(workspace, "init", "-q")
    monkeypatch.chdir(workspace)
    made = runner.invoke(cli, ["dkim", "keygen", "--domain", DOMAIN])
    assert made.exit_code == 0, made.output
    assert (workspace / "dkim-nurture.pem").stat().st_mode & 0o777 == 0o600
    assert "Warning" not in made.output
    _git(workspace, "add", ".")
    staged = _git(workspace, "diff", "--cached", "--name-only").stdout.split()
    assert "nurture.toml" in staged and "dkim-nurture.pem" not in staged

    bare = tmp_path / "bare"
    bare.mkdir()
    _git(bare, "init", "-q")
    monkeypatch.chdir(bare)
    exposed = runner.invoke(cli, ["dkim", "keygen", "--selector", "nurture", "--domain", DOMAIN])
    assert exposed.exit_code == 0, exposed.output
    assert ("Warning: dkim-nurture.pem is inside a git work tree and not ignored"
            in exposed.stderr)  # fmt: skip

    only_openssl = tmp_path / "bin"
    only_openssl.mkdir()
    (only_openssl / "openssl").symlink_to(shutil.which("openssl"))
    monkeypatch.setenv("PATH", str(only_openssl))
    unchecked = runner.invoke(cli, ["dkim", "keygen", "--selector", "s", "--domain", DOMAIN])
    assert unchecked.exit_code == 0 and "Warning" not in unchecked.output
