"""`nurture doctor` against a real DNS server (dnslib) with good and broken records, a
real HTTPS server running the web app, and a real SMTP sink."""

from __future__ import annotations

import shutil

import dkim
import pytest

from nurture import clock
from nurture.cli import cli
from nurture.delivery.dkim import keygen
from nurture.doctor.dns import dkimpy_lookup, resolver_for
from nurture.people.events import record
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Subscriber
from nurture.web import create_app
from tests.conftest import ROOT
from tests.helpers.deliverability import HttpsApp, LocalDns, good_records, self_signed

DOMAIN = "crumb.example"
#: A P-256 public key as SendGrid shows its verification key.
SENDGRID_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcw"
                "HBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==")  # fmt: skip


@pytest.fixture
def key(tmp_path):
    return keygen(tmp_path / "dkim.pem", "nurture", DOMAIN)


@pytest.fixture
def https_env(env, key, tmp_path, workspace, monkeypatch):
    """DKIM on, and the web app served over https with a certificate this process trusts."""
    shutil.copytree(ROOT / "newsletters", workspace / "newsletters")
    cert, cert_key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    dkim_env = env | {
        "NURTURE_DKIM_SELECTOR": "nurture",
        "NURTURE_DKIM_DOMAIN": DOMAIN,
        "NURTURE_DKIM_KEY": str(key.path),
    }
    with HttpsApp(create_app(load_settings(env=dkim_env)), cert, cert_key) as server:
        yield dkim_env | {"NURTURE_BASE_URL": server.url}


def doctor(runner, env, *args):
    return runner.invoke(cli, ["doctor", *args], env=env)


def lines(output: str) -> dict[str, str]:
    """check name -> its level, from `pass  SPF: …` lines."""
    found = {}
    for line in output.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("pass", "warn", "fail"):
            found[rest.strip().split(":")[0]] = level
    return found


def test_doctor_passes_on_a_correct_set_up_and_verifies_a_sent_email(runner, https_env, key, sink):
    with LocalDns(good_records(DOMAIN, key)) as dns:
        env = https_env | {"NURTURE_DNS_SERVER": dns.address,
                           "NURTURE_SES_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:ses",
                           "NURTURE_SENDGRID_WEBHOOK_KEY": SENDGRID_KEY}  # fmt: skip
        result = doctor(runner, env, "--send-to", "me@crumb.example")
        assert result.exit_code == 0, result.output
        assert lines(result.output) == {
            "SPF": "pass", "DKIM": "pass", "DMARC": "pass", "one-click unsubscribe": "pass",
            "postal address": "pass", "emails": "pass", "bounces and complaints": "pass",
            "bounce intake": "pass", "test email to me@crumb.example": "pass",
        }  # fmt: skip
        assert "pass  bounce intake: POST /webhooks/ses, POST /webhooks/sendgrid" in result.output
        assert "9 checks: 0 failed, 0 warnings" in result.output
        [received] = sink.to("me@crumb.example")
        lookup = dkimpy_lookup(resolver_for(load_settings(env=env)))
        assert dkim.verify(received.data, dnsfunc=lookup)


def test_doctor_names_each_broken_record(runner, https_env, tmp_path):
    other = keygen(tmp_path / "other.pem", "nurture", DOMAIN)  # not the configured key
    records = {
        DOMAIN: [["v=spf1 +all"]],
        other.txt_name: [
            [other.txt_value[i : i + 255] for i in range(0, len(other.txt_value), 255)]
        ],
    }  # and no DMARC record at all
    with LocalDns(records) as dns:
        result = doctor(runner, https_env | {"NURTURE_DNS_SERVER": dns.address})
    assert result.exit_code == 1
    found = lines(result.output)
    assert (found["SPF"], found["DKIM"], found["DMARC"]) == ("fail", "fail", "fail")
    assert "crumb.example's SPF record lets any server send as it (+all)" in result.output
    assert "the record publishes a different key than NURTURE_DKIM_KEY" in result.output
    assert "no DMARC record at _dmarc.crumb.example" in result.output
    assert 'fix: publish _dmarc.crumb.example TXT "v=DMARC1; p=none' in result.output
    assert found["one-click unsubscribe"] == "pass"


def test_doctor_fails_on_missing_records_plain_http_and_no_postal_address(runner, env, workspace):
    (workspace / "nurture.toml").write_text('from = "Maya <hello@crumb.example>"\n')
    with LocalDns({}) as dns:
        result = doctor(runner, env | {"NURTURE_BASE_URL": "http://crumb.example",
                                       "NURTURE_DNS_SERVER": dns.address})  # fmt: skip
    assert result.exit_code == 1
    found = lines(result.output)
    assert found == found | {"SPF": "fail", "DKIM": "fail", "DMARC": "fail",
                             "one-click unsubscribe": "fail", "postal address": "fail",
                             "emails": "pass", "bounce intake": "warn"}  # fmt: skip
    assert "nothing reads the bounces and complaints that arrive after the send" in result.output
    assert "no SPF record at crumb.example" in result.output
    assert "emails are not signed (DKIM is off)" in result.output
    assert "NURTURE_BASE_URL is http://crumb.example, not https" in result.output
    assert "Traceback" not in result.output


def test_doctor_fails_on_a_sendgrid_key_that_cannot_verify(runner, env):
    with LocalDns({}) as dns:
        result = doctor(runner, env | {"NURTURE_DNS_SERVER": dns.address,
                                       "NURTURE_SENDGRID_WEBHOOK_KEY": "bm90IGEga2V5"})  # fmt: skip
    assert lines(result.output)["bounce intake"] == "fail"
    assert "NURTURE_SENDGRID_WEBHOOK_KEY is not an ECDSA P-256 public key" in result.output


def test_a_dns_server_setting_that_is_not_an_address_is_one_clear_error(runner, env):
    result = doctor(runner, env | {"NURTURE_DNS_SERVER": "dns.example:53"})
    assert result.exit_code == 1
    assert "NURTURE_DNS_SERVER must be an IP address and port such as 127.0.0.1:53" in (
        result.output
    )


def test_doctor_fails_when_complaints_pass_what_gmail_tolerates(runner, env, settings, sink):
    for n in range(3):
        runner.invoke(cli, ["subscribers", "add", f"r{n}@example.com", "--confirmed"], env=env)
    runner.invoke(cli, ["send-due"], env=env)
    assert len(sink.messages) == 3
    with session_scope(settings) as session:
        first = session.query(Subscriber).order_by(Subscriber.id).first()
        assert first is not None
        record(session, first.id, "complained", clock.now())
    with LocalDns({}) as dns:
        result = doctor(runner, env | {"NURTURE_DNS_SERVER": dns.address})
    assert lines(result.output)["bounces and complaints"] == "fail"
    assert "3 sent in 30 days: 0.00% bounced, 33.33% complained" in result.output


def test_a_database_that_cannot_be_read_fails_its_check_alone(runner, env):
    broken = env | {"NURTURE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    with LocalDns({}) as dns:
        result = doctor(runner, broken | {"NURTURE_DNS_SERVER": dns.address})
    assert result.exit_code == 1
    found = lines(result.output)
    assert found["bounces and complaints"] == "fail" and found["emails"] == "pass"
    assert "the database cannot be read: cannot reach NURTURE_DATABASE_URL" in result.output
