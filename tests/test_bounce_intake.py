"""Bounces by mailbox (Maildir, a real dovecot IMAP server) and by provider webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from nurture.cli import cli
from nurture.people.subscribers import email_hash
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Event, Subscriber, Suppression
from nurture.web import create_app
from tests.helpers.bounces import BOUNCE_ADDRESS, sample, send_welcome
from tests.helpers.imap import Dovecot

MAILGUN_KEY = "key-" + "7" * 32
POSTMARK_TOKEN = "pm-" + "9" * 32


@pytest.fixture
def bounce_env(env):
    return {**env, "NURTURE_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
            "NURTURE_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
            "NURTURE_POSTMARK_WEBHOOK_TOKEN": POSTMARK_TOKEN}  # fmt: skip


@pytest.fixture
def bsettings(bounce_env):
    return load_settings(bounce_env["NURTURE_WORKSPACE"], env=bounce_env)


def _status(settings, address):
    with session_scope(settings) as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
        kinds = session.scalars(select(Event.kind).where(Event.subscriber_id == sub.id)).all()
        suppressed = session.scalar(
            select(Suppression.reason).where(Suppression.email_hash == email_hash(address))
        )
    return sub.status, [k for k in kinds if k in ("bounced", "complained")], suppressed


def _maildir(root: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def test_fetch_from_a_maildir_handles_new_messages_once_and_moves_them(
    bounce_env, bsettings, sink, runner, tmp_path
):
    ana = send_welcome(bsettings, sink, "ana@example.com")
    ben = send_welcome(bsettings, sink, "ben@example.com")
    box = _maildir(tmp_path / "Maildir")
    (box / "new" / "1764500000.1.host").write_bytes(sample("postfix-hard.eml", ana))
    (box / "new" / "1764500000.2.host").write_bytes(sample("yahoo-arf.eml", ben))
    result = runner.invoke(cli, ["bounces", "fetch", "--maildir", str(box)], env=bounce_env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "1 complaint, 1 hard bounce"
    assert sorted(p.name for p in (box / "cur").iterdir()) == [
        "1764500000.1.host:2,S", "1764500000.2.host:2,S"]  # fmt: skip
    assert list((box / "new").iterdir()) == []
    assert _status(bsettings, "ana@example.com")[0] == "bounced"
    assert _status(bsettings, "ben@example.com")[0] == "unsubscribed"
    again = runner.invoke(cli, ["bounces", "fetch", "--maildir", str(box)], env=bounce_env)
    assert again.output.strip() == "No new messages."


def test_fetch_from_a_folder_that_is_no_maildir_says_so(bounce_env, runner, tmp_path):
    result = runner.invoke(cli, ["bounces", "fetch", "--maildir", str(tmp_path)], env=bounce_env)
    assert result.exit_code == 1 and "is not a Maildir" in result.output


def test_fetch_from_imap_twice_at_once_handles_each_bounce_once(
    bounce_env, bsettings, sink, runner, tmp_path
):
    server = Dovecot(tmp_path / "dovecot").start()
    try:
        ana = send_welcome(bsettings, sink, "ana@example.com")
        server.deliver(sample("gmail-hard.eml", ana))
        server.deliver(b"From: ben@example.com\r\nSubject: Out of office\r\n\r\nBack Monday.\r\n")
        env = {**bounce_env, "NURTURE_BOUNCE_IMAP_URL": server.url}
        # two hosts read the same unseen message: the database lets only one handle it
        first = runner.invoke(cli, ["bounces", "fetch"], env=env)
        assert first.exit_code == 0, first.output
        assert first.output.strip() == "1 hard bounce, 1 not a bounce"
        assert _status(bsettings, "ana@example.com") == (
            "bounced",
            ["bounced"],
            _status(bsettings, "ana@example.com")[2],
        )
        server.mark_unseen()
        second = runner.invoke(cli, ["bounces", "fetch"], env=env)
        assert "1 duplicate" in second.output
        assert _status(bsettings, "ana@example.com")[1] == ["bounced"]
        assert server.seen_count() == 2
    finally:
        server.stop()


# --- webhooks ---------------------------------------------------------------


def _mailgun_body(event: dict, *, key: str = MAILGUN_KEY, timestamp: int | None = None,
                  token: str | None = None) -> bytes:  # fmt: skip
    ts = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex
    sig = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": ts, "token": token, "signature": sig},
                       "event-data": event}).encode()  # fmt: skip


def _mailgun_failed(sent, severity="permanent"):
    return {"event": "failed", "severity": severity, "recipient": sent.address,
            "id": uuid.uuid4().hex,
            "message": {"headers": {"message-id": sent.message_id.strip("<>")}},
            "delivery-status": {"code": 550, "message": "5.1.1 mailbox does not exist",
                                "description": ""}}  # fmt: skip


def test_mailgun_webhook_verified_tampered_and_replayed(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    client = create_app(bsettings).test_client()
    post = lambda body: client.post("/webhooks/mailgun", data=body,  # noqa: E731
                                    content_type="application/json")  # fmt: skip
    tampered = _mailgun_body(_mailgun_failed(sent), key="key-wrong" + "0" * 28)
    assert post(tampered).status_code == 401
    old = _mailgun_body(_mailgun_failed(sent), timestamp=int(time.time()) - 3600)
    assert post(old).status_code == 401
    assert _status(bsettings, "ana@example.com") == ("active", [], None)
    body = _mailgun_body(_mailgun_failed(sent))
    answer = post(body)
    assert answer.status_code == 200 and answer.get_json() == {"outcome": "hard bounce"}
    assert _status(bsettings, "ana@example.com")[:2] == ("bounced", ["bounced"])
    replayed = post(body)
    assert replayed.status_code == 409 and "handled before" in replayed.get_json()["error"]
    assert _status(bsettings, "ana@example.com")[1] == ["bounced"]


def test_mailgun_complaint_unsubscribes_and_suppresses(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    client = create_app(bsettings).test_client()
    event = {"event": "complained", "recipient": sent.address, "message": {"headers": {}}}
    answer = client.post("/webhooks/mailgun", data=_mailgun_body(event),
                         content_type="application/json")  # fmt: skip
    assert answer.get_json() == {"outcome": "complaint"}
    status, kinds, suppressed = _status(bsettings, "ana@example.com")
    assert (status, kinds) == ("unsubscribed", ["complained"]) and suppressed


@pytest.mark.parametrize(("timestamp", "part", "error"), [
    ("²", None, "the Mailgun timestamp is not a number of seconds"),
    ("9" * 5000, None, "the Mailgun timestamp is not a number of seconds"),
    (None, "message", "event-data.message is not an object"),
    (None, "delivery-status", "event-data.delivery-status is not an object"),
])  # fmt: skip
def test_a_mailgun_call_of_the_wrong_shape_is_refused_and_changes_nothing(
    bsettings, sink, timestamp, part, error
):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    event = _mailgun_failed(sent)
    if part:
        event[part] = "x"
    answer = create_app(bsettings).test_client().post(
        "/webhooks/mailgun", data=_mailgun_body(event, timestamp=timestamp),
        content_type="application/json")  # fmt: skip
    assert (answer.status_code, answer.get_json()) == (400, {"error": error})
    assert _status(bsettings, "ana@example.com") == ("active", [], None)


def _postmark_bounce(sent, kind="HardBounce", record_id=None):
    return json.dumps({"RecordType": "Bounce", "ID": record_id or 4323372036854775807,
                       "Type": kind, "TypeCode": 1, "Email": sent.address,
                       "Description": "The server was unable to deliver your message",
                       "Details": "smtp;550 5.1.1 The email account does not exist.",
                       "MessageID": str(uuid.uuid4())}).encode()  # fmt: skip


def test_postmark_webhook_verified_tampered_and_replayed(bsettings, sink):
    sent = send_welcome(bsettings, sink, "ana@example.com")
    client = create_app(bsettings).test_client()
    body = _postmark_bounce(sent)
    wrong = client.post("/webhooks/postmark?token=guess", data=body,
                        content_type="application/json")  # fmt: skip
    assert wrong.status_code == 401
    none = client.post("/webhooks/postmark", data=body, content_type="application/json")
    assert none.status_code == 401
    assert _status(bsettings, "ana@example.com") == ("active", [], None)
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(
        f"postmark:{POSTMARK_TOKEN}".encode()).decode()}  # fmt: skip
    ok = client.post("/webhooks/postmark", data=body, headers=auth,
                     content_type="application/json")  # fmt: skip
    assert ok.status_code == 200 and ok.get_json() == {"outcome": "hard bounce"}
    replayed = client.post(f"/webhooks/postmark?token={POSTMARK_TOKEN}", data=body,
                           content_type="application/json")  # fmt: skip
    assert replayed.get_json() == {"outcome": "duplicate"}
    assert _status(bsettings, "ana@example.com")[1] == ["bounced"]


def test_a_webhook_that_is_not_set_up_or_unknown_changes_nothing(settings, sink):
    client = create_app(settings).test_client()
    assert client.post("/webhooks/mailgun", json={}).status_code == 403
    assert client.post("/webhooks/postmark", json={}).status_code == 403
    assert client.post("/webhooks/nosuch", json={}).status_code == 404
