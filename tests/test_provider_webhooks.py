"""Amazon SES (through SNS) and SendGrid webhooks: signed messages made here with keys
made here, the SNS signing certificate served by a local server; what a forged,
misdirected, stale or replayed call does (nothing), and what a real one does."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from nurture.cli import cli
from nurture.delivery.bounces import sns
from nurture.delivery.bounces.sendgrid import signed_by
from nurture.mailsettings import sendgrid_verification_key
from nurture.people.subscribers import email_hash
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event, Subscriber, Suppression
from nurture.web import create_app
from tests.helpers.bounces import BOUNCE_ADDRESS, send_welcome
from tests.helpers.providers import (
    TOPIC,
    FakeSns,
    ec_key,
    ec_public_base64,
    sendgrid_headers,
    ses_bounce,
    ses_complaint,
    signed,
)


@pytest.fixture
def hooks_env(env):
    return {**env, "NURTURE_BOUNCE_ADDRESS": BOUNCE_ADDRESS, "NURTURE_SES_TOPIC_ARNS": TOPIC,
            "NURTURE_SENDGRID_WEBHOOK_KEY": ec_public_base64(ec_key())}  # fmt: skip


@pytest.fixture
def hsettings(hooks_env):
    return load_settings(hooks_env["NURTURE_WORKSPACE"], env=hooks_env)


@pytest.fixture
def fake_sns(monkeypatch):
    """The local server playing SNS; its http origin is trusted for this test only."""
    with FakeSns() as server:
        monkeypatch.setattr(sns, "EXTRA_ORIGINS", {server.origin})
        yield server


def _status(settings, address):
    with session_scope(settings) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
        events = session.execute(
            select(Event.kind, Event.data).where(Event.subscriber_id == sub.id,
                                                 Event.kind.in_(["bounced", "complained"]))
        ).all()  # fmt: skip
        suppressed = session.scalar(
            select(Suppression.reason).where(Suppression.email_hash == email_hash(address))
        )
    return sub.status, [(k, d) for k, d in events], suppressed


def _post_sns(client, message):
    return client.post("/webhooks/ses", data=json.dumps(message),
                       headers={"x-amz-sns-message-type": message.get("Type", "")},
                       content_type="text/plain; charset=UTF-8")  # fmt: skip


# --- Amazon SES through SNS --------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_hard_bounce_suppresses_and_lands_on_the_timeline(hsettings, sink, fake_sns,
                                                                 version):  # fmt: skip
    sent = send_welcome(hsettings, sink, "ana@example.com")
    body = ses_bounce(sent.address, sent.message_id, sent.envelope_sender)
    answer = _post_sns(create_app(hsettings).test_client(),
                       fake_sns.message("Notification", body, version=version))  # fmt: skip
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"outcome": "hard bounce"}
    status, events, suppressed = _status(hsettings, "ana@example.com")
    assert status == "bounced" and suppressed
    [(kind, data)] = events
    assert kind == "bounced" and data["type"] == "hard" and data["provider"] == "ses"
    assert data["reason"] == "Permanent (General): 5.1.1 smtp; 550 5.1.1 user unknown"
    assert fake_sns.gets == [fake_sns.cert_url.removeprefix(fake_sns.origin)]


def test_the_signing_certificate_is_fetched_once(hsettings, sink, fake_sns):
    client = create_app(hsettings).test_client()
    ana = send_welcome(hsettings, sink, "ana@example.com")
    ben = send_welcome(hsettings, sink, "ben@example.com")
    for sent in (ana, ben):
        body = ses_bounce(sent.address, sent.message_id, sent.envelope_sender, "Transient",
                          "MailboxFull")  # fmt: skip
        answer = _post_sns(client, fake_sns.message("Notification", body))
        assert answer.get_json() == {"outcome": "soft bounce"}
    assert len(fake_sns.gets) == 1
    assert _status(hsettings, "ben@example.com")[0] == "active"  # one soft bounce: kept


def test_an_ses_complaint_unsubscribes_and_suppresses(hsettings, sink, fake_sns):
    sent = send_welcome(hsettings, sink, "ana@example.com")
    body = ses_complaint(sent.address, sent.message_id, sent.envelope_sender)
    answer = _post_sns(create_app(hsettings).test_client(),
                       fake_sns.message("Notification", body))  # fmt: skip
    assert answer.get_json() == {"outcome": "complaint"}
    status, events, suppressed = _status(hsettings, "ana@example.com")
    assert status == "unsubscribed" and suppressed.startswith("complained (ses)")
    assert [(k, d["reason"]) for k, d in events] == [("complained", "abuse report")]


@pytest.mark.parametrize("feedback", ["not-spam", "auth-failure"])
def test_feedback_that_is_no_complaint_changes_nothing(hsettings, sink, fake_sns, feedback):
    sent = send_welcome(hsettings, sink, "ana@example.com")
    body = ses_complaint(sent.address, sent.message_id, sent.envelope_sender, feedback)
    answer = _post_sns(create_app(hsettings).test_client(),
                       fake_sns.message("Notification", body))  # fmt: skip
    assert answer.status_code == 200 and answer.get_json()["outcome"].startswith("ignored")
    assert _status(hsettings, "ana@example.com") == ("active", [], None)


def test_deliveries_and_ses_test_messages_are_ignored(hsettings, sink, fake_sns):
    client = create_app(hsettings).test_client()
    delivery = json.dumps({"notificationType": "Delivery", "mail": {}, "delivery": {}})
    for body in (delivery, "Successfully validated SNS topic for Amazon SES event publishing."):
        answer = _post_sns(client, fake_sns.message("Notification", body))
        assert answer.status_code == 200 and answer.get_json()["outcome"].startswith("ignored")


def _sns_rejections(server, sent, now):
    """(what, message, status, error) of calls that must change nothing."""
    body = ses_bounce(sent.address, sent.message_id, sent.envelope_sender)
    tampered = server.message("Notification", body)
    tampered["Message"] = tampered["Message"].replace("Permanent", "Transient")
    not_sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unsigned = {k: v for k, v in tampered.items() if k not in ("Signature", "SignatureVersion")}
    no_topic = {k: v for k, v in server.message("Notification", body).items() if k != "TopicArn"}
    return [
        ("unsigned", unsigned, 401, "the message is not signed (SNS signs every message"),
        ("raw message delivery", json.loads(body), 401, "raw message delivery off"),
        ("no TopicArn", no_topic, 403, "the SNS message has no TopicArn"),
        ("tampered", tampered, 401, "does not verify"),
        ("signed by another key", signed(server.message("Notification", body), not_sns), 401,
         "does not verify"),
        ("certificate on another host", server.message(
            "Notification", body,
            SigningCertURL="https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"), 403,
         "SigningCertURL"),
        ("certificate over http", server.message(
            "Notification", body,
            SigningCertURL="http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem"),
         403, "SigningCertURL"),
        ("certificate behind a user@", server.message(
            "Notification", body,
            SigningCertURL="https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem"), 403,
         "SigningCertURL"),
        ("stale", server.message("Notification", body, at=now - timedelta(hours=2)), 401,
         "too old"),
        ("from the future", server.message("Notification", body, at=now + timedelta(hours=1)),
         401, "from the future"),
        ("unknown type", server.message("Surprise", body), 400, "unknown SNS message type"),
        ("unknown signature version", server.message("Notification", body, version="3"), 400,
         "SignatureVersion"),
        ("another topic", server.message(
            "Notification", body, topic="arn:aws:sns:eu-west-1:999999999999:not-ours"), 403,
         "is not in NURTURE_SES_TOPIC_ARNS"),
    ]  # fmt: skip


def test_sns_calls_that_do_not_verify_change_nothing(hsettings, sink, fake_sns):
    sent = send_welcome(hsettings, sink, "ana@example.com")
    client = create_app(hsettings).test_client()
    for what, message, status, says in _sns_rejections(fake_sns, sent, datetime.now(UTC)):
        answer = _post_sns(client, message)
        assert answer.status_code == status, (what, answer.get_json())
        assert says in answer.get_json()["error"], what
    assert _status(hsettings, "ana@example.com") == ("active", [], None)
    # nothing but the certificate was fetched, and only from the trusted origin
    assert set(fake_sns.gets) <= {fake_sns.cert_url.removeprefix(fake_sns.origin)}


def test_an_sns_message_sent_again_is_a_replay(hsettings, sink, fake_sns):
    sent = send_welcome(hsettings, sink, "ana@example.com")
    client = create_app(hsettings).test_client()
    message = fake_sns.message("Notification", ses_complaint(sent.address, sent.message_id,
                                                             sent.envelope_sender))  # fmt: skip
    assert _post_sns(client, message).status_code == 200
    again = _post_sns(client, message)
    assert again.status_code == 409 and "handled before" in again.get_json()["error"]
    assert len(_status(hsettings, "ana@example.com")[1]) == 1


def test_a_subscription_is_confirmed_only_once_its_signature_verifies(hsettings, fake_sns):
    client = create_app(hsettings).test_client()
    forged = fake_sns.message("SubscriptionConfirmation", "You have chosen to subscribe.")
    forged["Token"] = "another-token"
    assert _post_sns(client, forged).status_code == 401
    elsewhere = fake_sns.message(
        "SubscriptionConfirmation",
        "You have chosen to subscribe.",
        SubscribeURL="https://evil.example/?Action=ConfirmSubscription",
    )
    assert _post_sns(client, elsewhere).status_code == 403
    assert not [g for g in fake_sns.gets if "ConfirmSubscription" in g]
    good = fake_sns.message("SubscriptionConfirmation", "You have chosen to subscribe.")
    answer = _post_sns(client, good)
    assert answer.status_code == 200 and answer.get_json() == {"outcome": f"subscribed to {TOPIC}"}
    [confirmed] = [g for g in fake_sns.gets if "ConfirmSubscription" in g]
    assert confirmed == good["SubscribeURL"].removeprefix(fake_sns.origin)


def test_an_unsubscribe_confirmation_is_not_followed(hsettings, fake_sns):
    client = create_app(hsettings).test_client()
    answer = _post_sns(client, fake_sns.message("UnsubscribeConfirmation", "Unsubscribed."))
    assert answer.status_code == 200 and answer.get_json()["outcome"].startswith("ignored")
    assert not [g for g in fake_sns.gets if "ConfirmSubscription" in g]


def test_without_topics_the_ses_webhook_is_off(settings, fake_sns):
    client = create_app(settings).test_client()
    answer = _post_sns(client, fake_sns.message("SubscriptionConfirmation", "subscribe"))
    assert answer.status_code == 403 and "NURTURE_SES_TOPIC_ARNS" in answer.get_json()["error"]
    assert fake_sns.gets == []


def test_production_trusts_only_https_sns_hosts():
    assert not sns.EXTRA_ORIGINS  # no origin but SNS's own outside the tests
    assert sns.trusted("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a.pem")
    assert sns.trusted("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a.pem")
    for url in ("http://sns.eu-west-1.amazonaws.com/a.pem",
                "https://sns.eu-west-1.amazonaws.com:8443/a.pem",
                "https://sns.eu-west-1.amazonaws.com.evil.example/a.pem",
                "https://evil.example/sns.eu-west-1.amazonaws.com/a.pem",
                "https://x@sns.eu-west-1.amazonaws.com/a.pem",
                "https://s3.amazonaws.com/sns/a.pem",
                "http://127.0.0.1:8000/a.pem"):  # fmt: skip
        assert not sns.trusted(url), url


# --- SendGrid -----------------------------------------------------------------


def _sendgrid_events(*events):
    return json.dumps([{"timestamp": int(time.time()), "sg_event_id": uuid.uuid4().hex,
                        "sg_message_id": uuid.uuid4().hex, **e} for e in events]).encode()  # fmt: skip


def _post_sendgrid(client, body, headers):
    return client.post("/webhooks/sendgrid", data=body, headers=headers,
                       content_type="application/json")  # fmt: skip


def test_sendgrid_events_bounce_block_and_complain(hsettings, sink):
    client = create_app(hsettings).test_client()
    ana, ben, cy, dan = (send_welcome(hsettings, sink, f"{n}@example.com")
                         for n in ("ana", "ben", "cy", "dan"))  # fmt: skip
    body = _sendgrid_events(
        {"event": "bounce", "type": "bounce", "email": ana.address, "smtp-id": ana.message_id,
         "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist."},
        {"event": "bounce", "type": "blocked", "email": ben.address, "status": "4.0.0",
         "reason": "421 try again later"},
        {"event": "spamreport", "email": cy.address},
        {"event": "dropped", "email": dan.address, "reason": "Bounced Address"},
        {"event": "delivered", "email": ben.address, "response": "250 OK"},
        {"event": "dropped", "email": ben.address, "reason": "Recipient List over Package Quota"},
    )  # fmt: skip
    answer = _post_sendgrid(client, body, sendgrid_headers(ec_key(), body))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"outcome": "1 complaint, 2 hard bounce, 1 soft bounce"}
    assert _status(hsettings, ana.address)[0] == "bounced"
    ana_event = _status(hsettings, ana.address)[1][0][1]
    assert ana_event["reason"] == "5.1.1 550 5.1.1 The email account does not exist."
    assert _status(hsettings, ben.address)[:2][0] == "active"
    assert _status(hsettings, ben.address)[1][0][1]["type"] == "soft"
    assert _status(hsettings, cy.address)[0] == "unsubscribed"
    assert _status(hsettings, dan.address)[0] == "bounced"
    again = _post_sendgrid(client, body, sendgrid_headers(ec_key(), body))
    assert again.status_code == 409
    assert len(_status(hsettings, ana.address)[1]) == 1


def test_sendgrid_calls_that_do_not_verify_change_nothing(hsettings, sink):
    client = create_app(hsettings).test_client()
    sent = send_welcome(hsettings, sink, "ana@example.com")
    body = _sendgrid_events({"event": "spamreport", "email": sent.address})
    forger = ec.generate_private_key(ec.SECP256R1())
    signed = sendgrid_headers(ec_key(), body)
    calls = [
        ("forged", body, sendgrid_headers(forger, body), 401),
        ("body changed", body.replace(b"spamreport", b"bounce"), signed, 401),
        ("timestamp changed", body, {**signed, "X-Twilio-Email-Event-Webhook-Timestamp":
                                     str(int(time.time()) - 1)}, 401),
        ("stale", body, sendgrid_headers(ec_key(), body, int(time.time()) - 600), 401),
        ("superscript timestamp", body, sendgrid_headers(ec_key(), body, "²"), 400),
        ("endless timestamp", body, sendgrid_headers(ec_key(), body, "9" * 5000), 400),
        ("unsigned", body, {}, 401),
        ("signature not base64", body, {**signed,
                                        "X-Twilio-Email-Event-Webhook-Signature": "%%%"}, 401),
    ]  # fmt: skip
    for what, data, headers, status in calls:
        answer = _post_sendgrid(client, data, headers)
        assert answer.status_code == status, (what, answer.get_json())
        if status == 400:
            assert answer.get_json() == {
                "error": "the SendGrid timestamp is not a number of seconds"
            }
    assert _status(hsettings, "ana@example.com") == ("active", [], None)
    with session_scope(hsettings) as session:
        assert session.scalar(select(Delivery.status)) == "sent"


def test_sendgrids_own_published_example_verifies():
    """The key, signature and payload SendGrid's libraries test against: proof that the
    signed bytes are the timestamp and the body as sent, and the key format read right."""
    key = sendgrid_verification_key(base64.b64decode(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcep"
        "xo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="))  # fmt: skip
    payload = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    signature = ("MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVR"
                 "amr2nlxFDWYNH2j/0=")  # fmt: skip
    assert signed_by(key, signature, "1588788367", payload)
    assert not signed_by(key, signature, "1588788368", payload)


def test_a_sendgrid_key_that_is_no_p256_key_is_a_clear_error(hooks_env, sink, runner):
    env = {**hooks_env, "NURTURE_SENDGRID_WEBHOOK_KEY": "bm90IGEga2V5"}  # "not a key"
    client = create_app(load_settings(env["NURTURE_WORKSPACE"], env=env)).test_client()
    body = _sendgrid_events({"event": "spamreport", "email": "ana@example.com"})
    answer = _post_sendgrid(client, body, sendgrid_headers(ec_key(), body))
    assert answer.status_code == 500
    assert answer.get_json()["error"].startswith("NURTURE_SENDGRID_WEBHOOK_KEY is not an ECDSA")
    result = runner.invoke(cli, ["validate"], env=env)
    assert result.exit_code == 1
    assert "nurture.toml: NURTURE_SENDGRID_WEBHOOK_KEY is not an ECDSA P-256" in result.output
    assert "Traceback" not in result.output


def test_a_sendgrid_event_whose_address_is_not_the_emails_recipient_is_unmatched(hsettings, sink):
    client = create_app(hsettings).test_client()
    ana = send_welcome(hsettings, sink, "ana@example.com")
    ben = send_welcome(hsettings, sink, "ben@example.com")
    body = _sendgrid_events({"event": "bounce", "type": "bounce", "email": ben.address,
                             "smtp-id": ana.message_id, "reason": "550 no such user"})  # fmt: skip
    answer = _post_sendgrid(client, body, sendgrid_headers(ec_key(), body))
    assert answer.status_code == 200 and answer.get_json() == {"outcome": "unmatched"}
    assert _status(hsettings, ana.address) == ("active", [], None)
    assert _status(hsettings, ben.address) == ("active", [], None)


def test_an_ses_bounce_suppresses_only_recipients_of_the_bounced_email(hsettings, sink, fake_sns):
    client = create_app(hsettings).test_client()
    ana = send_welcome(hsettings, sink, "ana@example.com")
    ben = send_welcome(hsettings, sink, "ben@example.com")
    body = ses_bounce(ben.address, ana.message_id, ana.envelope_sender)
    answer = _post_sns(client, fake_sns.message("Notification", body))
    assert answer.status_code == 200 and answer.get_json() == {"outcome": "unmatched"}
    assert _status(hsettings, ana.address) == ("active", [], None)
    assert _status(hsettings, ben.address) == ("active", [], None)
