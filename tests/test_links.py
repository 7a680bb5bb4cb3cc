"""Personal links act only on the person they were sent to, and cannot be replayed to
flood anyone: ids never come back, every link carries the person's link key, and the
confirm, unsubscribe and resubscribe routes are limited per client and per link."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select, update

from nurture import clock
from nurture.cli import cli
from nurture.store.engine import session_scope
from nurture.store.tables import Consent, Event, Subscriber
from nurture.tokens import Purpose, make_token
from nurture.web import create_app
from nurture.web.common import SETTINGS
from tests.helpers.web import FORM, confirmed, count, drain, link_in, post_signup, subscriber


@pytest.fixture
def app(settings):
    app = create_app(replace(settings, subscribe_limit="1000 per minute"))
    yield app
    app.extensions["nurture"].background.stop()


@pytest.fixture
def client(app):
    return app.test_client()


ONE_CLICK = {"data": "List-Unsubscribe=One-Click", "content_type": FORM}


def links_of(sink, email: str) -> tuple[str, str]:
    """(confirm path, unsubscribe path) of the last confirmation `email` received."""
    received = sink.to(email)[-1]
    return link_in(received, "confirm"), link_in(received, "unsubscribe")


def assert_refused(client, *paths: str) -> None:
    for path in paths:
        for method in ("POST",) if "/resubscribe/" in path else ("GET", "POST"):
            answer = client.open(path, method=method)
            assert answer.status_code == 400, (path, method)
            assert "This link doesn't work" in html.unescape(answer.text)


def test_a_forgotten_persons_links_act_on_nobody_after(client, app, settings, sink, runner, env):
    post_signup(client, app, email="ana@example.com")
    confirm_a, unsub_a = links_of(sink, "ana@example.com")
    a_id = subscriber(settings, "ana@example.com").id
    forgotten = runner.invoke(cli, ["subscribers", "forget", "ana@example.com", "--yes"], env=env)
    assert forgotten.exit_code == 0, forgotten.output
    post_signup(client, app, email="bo@example.com")
    bo = subscriber(settings, "bo@example.com")
    assert bo.id != a_id  # never the forgotten person's id again, on SQLite too

    assert_refused(client, confirm_a, unsub_a, unsub_a.replace("/unsubscribe/", "/resubscribe/"))
    page = client.get(unsub_a)
    assert "bo@example.com" not in page.text
    assert subscriber(settings, "bo@example.com").status == "pending"
    assert count(settings, Consent) == 1 and count(settings, Event) == 0


def test_a_link_checks_the_persons_key_not_only_the_id(client, app, settings, sink):
    """Even given the same id (an old database, or a restored backup), the key differs."""
    post_signup(client, app, email="ana@example.com")
    confirm_a, unsub_a = links_of(sink, "ana@example.com")
    with session_scope(settings) as session:
        ana = session.scalars(select(Subscriber)).one()
        a_id = ana.id
        session.delete(ana)
        session.flush()
        session.add(Subscriber(id=a_id, email="bo@example.com", status="pending",
                               source="form", created_at=clock.now()))  # fmt: skip
    assert_refused(client, confirm_a, unsub_a)
    assert subscriber(settings, "bo@example.com").status == "pending"


def an_hour_ago(settings) -> None:
    """As if the last confirmation went out over an hour ago."""
    with session_scope(settings) as session:
        session.execute(update(Subscriber).values(
            confirmation_sent_at=clock.now() - timedelta(hours=2)))  # fmt: skip


def test_subscribing_again_retires_the_old_links(client, app, settings, sink):
    post_signup(client, app, email="ana@example.com")
    confirm_1, unsub_1 = links_of(sink, "ana@example.com")
    client.post(confirm_1)
    client.post(unsub_1, **ONE_CLICK)
    assert subscriber(settings).status == "unsubscribed"
    an_hour_ago(settings)
    post_signup(client, app, email="ana@example.com")  # a new opt-in
    confirm_2, unsub_2 = links_of(sink, "ana@example.com")
    assert confirm_2 != confirm_1
    assert_refused(client, confirm_1, unsub_1)
    assert subscriber(settings).status == "pending"
    assert client.post(confirm_2).status_code == 200
    assert subscriber(settings).status == "active"
    assert client.post(unsub_2, **ONE_CLICK).status_code == 200
    assert subscriber(settings).status == "unsubscribed"


def test_links_signed_before_link_keys_still_work_for_their_own_person(client, settings):
    """Unsubscribe links in emails sent before keys existed must keep working (the law
    wants 30 days at least), but only for someone created before they were signed."""
    with freeze_time(clock.now() - timedelta(days=3)):
        ana = confirmed(settings, "ana@example.com")
        legacy = make_token(settings.secret_key, Purpose.UNSUBSCRIBE, {"s": ana.id, "q": None})
    with session_scope(settings) as session:  # as if ana were created after the link
        session.execute(update(Subscriber).values(created_at=clock.now()))
    assert_refused(client, f"/unsubscribe/{legacy}")
    with session_scope(settings) as session:
        session.execute(update(Subscriber).values(created_at=clock.now() - timedelta(days=4)))
    assert client.post(f"/unsubscribe/{legacy}", **ONE_CLICK).status_code == 200
    assert subscriber(settings).status == "unsubscribed"


# -- floods --------------------------------------------------------------------------
def test_unsubscribe_and_resubscribe_in_turn_send_one_confirmation_an_hour(
    client, app, settings, sink
):
    # the address's own limit alone
    app.config[SETTINGS] = replace(app.config[SETTINGS], token_limit="1000 per minute")
    post_signup(client, app, email="ana@example.com")
    confirm, unsub = links_of(sink, "ana@example.com")
    client.post(confirm)
    resub = unsub.replace("/unsubscribe/", "/resubscribe/")
    for _ in range(5):  # within the hour of the first confirmation: nothing more is sent
        assert client.post(unsub, **ONE_CLICK).status_code == 200
        assert client.post(resub).status_code == 200
        drain(app)
    assert len(sink.to("ana@example.com")) == 1
    assert subscriber(settings).status == "pending"

    an_hour_ago(settings)  # an hour later: one more, and the forwarded links are retired
    for _ in range(3):
        client.post(unsub, **ONE_CLICK)
        client.post(resub)
        drain(app)
    assert len(sink.to("ana@example.com")) == 2
    assert_refused(client, unsub, resub)


def test_personal_links_are_limited_per_link_and_per_client(client, app, settings, sink):
    ana = confirmed(settings, "ana@example.com")
    from nurture.delivery.compose import unsubscribe_url

    unsub = unsubscribe_url(settings, ana.id, None, ana.link_key).removeprefix(settings.base_url)
    app.config[SETTINGS] = replace(app.config[SETTINGS], token_limit="3 per minute")
    answers = [client.get(unsub).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    too_many = client.get(unsub)
    assert too_many.headers["Retry-After"].isdigit()

    app.config[SETTINGS] = replace(
        app.config[SETTINGS], token_limit="1000 per minute", link_limit="2 per minute"
    )
    others = [f"/confirm/not-a-token-{i}" for i in range(4)]
    assert [client.get(p).status_code for p in others] == [400, 400, 429, 429]
    # A mail provider's one-click posts come from its few addresses for all its users.
    assert client.post(unsub, **ONE_CLICK).status_code == 200
    assert subscriber(settings).status == "unsubscribed"


def test_personal_pages_are_never_cached(client, app, settings, sink):
    post_signup(client, app)
    confirm, unsub = links_of(sink, "ana@example.com")
    for path in (confirm, unsub, "/confirm/broken"):
        assert "no-store" in client.get(path).headers["Cache-Control"], path
    answer = client.post("/subscribe", data={"email": "bo@example.com"})
    assert "no-store" in answer.headers["Cache-Control"]


def test_a_forgotten_persons_open_and_click_links_count_for_nobody(
    client, app, settings, sink, runner, env
):
    """Open and click links name a delivery; its id must not come back for someone else."""
    from nurture.send_due import run_send_due
    from tests.helpers.web import CHROME

    def welcome_links(email: str) -> tuple[str, str]:
        post_signup(client, app, email=email)
        client.post(links_of(sink, email)[0])
        run_send_due(settings)
        drain(app)
        body = sink.to(email)[-1].message.get_body(("html",)).get_content()
        pixel = re.search(r'src="https://crumb\.example(/o/[\w.-]+)"', body).group(1)
        click = re.search(r'href="https://crumb\.example(/c/[\w.-]+)"', body).group(1)
        return pixel, click

    pixel_a, click_a = welcome_links("ana@example.com")
    forgotten = runner.invoke(cli, ["subscribers", "forget", "ana@example.com", "--yes"], env=env)
    assert forgotten.exit_code == 0, forgotten.output
    welcome_links("bo@example.com")
    person = {"User-Agent": CHROME}
    assert client.get(pixel_a, headers=person).status_code == 200  # the image still loads
    assert client.get(click_a, headers=person).status_code == 302  # the link still goes
    assert count(settings, Event, Event.kind.in_(["open", "click"])) == 0


PAYLOADS = [
    {"d": 7, "u": "https://crumb.example/shop"},
    {"d": 123456, "u": "https://crumb.example/" + "blog/" * 40 + "?q=crème&a=1"},  # compresses
    {"s": 42, "k": "Zm9vYmFy", "q": "from-curious-to-customer"},
    {"s": 42, "k": "Zm9vYmFy"},
    {"d": 9},
    31337,  # a bounce address's delivery id
]


@pytest.mark.parametrize("purpose", list(Purpose))
def test_tokens_are_itsdangerous_tokens_byte_for_byte(purpose):
    """make_token writes what itsdangerous's URLSafeTimedSerializer would, so every link
    ever sent reads back with it (read_token), whatever the payload."""
    from itsdangerous import URLSafeTimedSerializer

    for secret in ("a-secret-key-of-forty-characters-or-so!!", "sécret"):
        reference = URLSafeTimedSerializer(secret, salt=f"nurture.{purpose}")
        for at in ("2026-05-04 09:00:00", "2031-12-31 23:59:59"):
            with freeze_time(at):
                for payload in PAYLOADS:
                    token = make_token(secret, purpose, payload)
                    assert token == reference.dumps(payload)
                    assert reference.loads(token) == payload
