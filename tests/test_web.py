"""The web app through Flask's test client: signup, double opt-in, unsubscribe, API, health."""

from __future__ import annotations

import html
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from freezegun import freeze_time
from sqlalchemy import event, select, update

from nurture import clock
from nurture.delivery.compose import unsubscribe_url
from nurture.errors import ConfigError
from nurture.people.subscribers import DEFAULT_WORDING, get
from nurture.settings import load_settings
from nurture.store.engine import get_engine, session_scope
from nurture.store.tables import Consent, Delivery, Enrollment, Event, Subscriber, Tag
from nurture.tokens import Purpose, make_token
from nurture.web import create_app
from nurture.web.common import SETTINGS
from nurture.web.throttle import PREFIX, Throttle
from tests.helpers.web import (
    CHROME,
    FORM,
    confirmed,
    count,
    drain,
    link_in,
    post_signup,
    queued_welcome,
    subscriber,
)
from tests.services import REDIS_URL, own_redis_database, unavailable


@pytest.fixture
def app(settings):
    # one test checks the real limit, and one the time floor
    app = create_app(replace(settings, subscribe_limit="1000 per minute", signup_seconds=0))
    yield app
    app.extensions["nurture"].background.stop()


@pytest.fixture
def client(app):
    return app.test_client()


# -- the form ------------------------------------------------------------------------
def test_signup_form_is_accessible_and_sets_no_cookie(client):
    response = client.get("/subscribe")
    page = response.text
    assert response.status_code == 200
    assert '<label for="nurture-email">Email address</label>' in page
    assert 'id="nurture-email" name="email" type="email" autocomplete="email"' in page
    assert '<label for="nurture-first_name">' in page
    assert 'class="nurture-hp" aria-hidden="true"' in page and 'tabindex="-1"' in page
    assert DEFAULT_WORDING in page
    assert '<html lang="en">' in page and "/static/nurture.css" in page
    assert "Set-Cookie" not in response.headers
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    css = client.get("/static/nurture.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_signup_sends_a_confirmation_and_records_consent(app, settings, sink):
    app = create_app(replace(settings, signup_tags=frozenset({"bakery", "web"})))
    client = app.test_client()
    response = post_signup(client, app, first_name="  Ana  ", timezone="Europe/Paris",
                           tags="bakery, Web")  # fmt: skip
    assert response.status_code == 200
    assert "Check your inbox" in response.text and "ana@example.com" in response.text
    [received] = sink.to("ana@example.com")
    assert received.message["Subject"] == "Please confirm your subscription"
    sub = subscriber(settings)
    assert (sub.status, sub.first_name, sub.timezone) == ("pending", "Ana", "Europe/Paris")
    with session_scope(settings) as session:
        tags = session.scalars(select(Tag.name).where(Tag.subscriber_id == sub.id)).all()
        [consent] = session.scalars(select(Consent)).all()
    assert sorted(tags) == ["bakery", "web"]
    assert (consent.action, consent.source, consent.ip) == ("requested", "form", "127.0.0.1")
    assert consent.user_agent.startswith("Werkzeug") and consent.wording == DEFAULT_WORDING
    assert consent.form == "/subscribe"


def test_get_on_a_confirm_link_changes_nothing_and_the_button_confirms(client, app, settings, sink):
    post_signup(client, app, first_name="Ana")
    path = link_in(sink.to("ana@example.com")[0], "confirm")

    for _ in range(2):  # a mail scanner, then the person
        page = client.get(path)
        assert page.status_code == 200
        assert f'<form method="post" action="{path}">' in page.text
    assert subscriber(settings).status == "pending"
    assert count(settings, Enrollment) == 0
    assert count(settings, Consent, Consent.action == "confirmed") == 0

    done = client.post(path, headers={"User-Agent": CHROME})
    assert done.status_code == 200 and "You're in, Ana!" in done.text
    sub = subscriber(settings)
    assert sub.status == "active" and sub.confirmed_at is not None
    assert count(settings, Enrollment, Enrollment.sequence == "from-curious-to-customer") == 1
    with session_scope(settings) as session:
        ledger = session.scalars(select(Consent).order_by(Consent.id)).all()
    assert [c.action for c in ledger] == ["requested", "confirmed"]
    assert ledger[1].user_agent == CHROME and ledger[1].ip == "127.0.0.1"
    again = client.post(path)
    assert again.status_code == 200 and "already subscribed" in again.text
    assert count(settings, Consent) == 2
    app.extensions["nurture"].background.stop()


def test_confirmation_enrols_in_the_sequence_the_form_asked_for(client, app, settings, sink,
                                                                 workspace):  # fmt: skip
    (workspace / "sequences" / "bread-course.yaml").write_text(
        "trigger: manual\nsteps:\n  - id: one\n    subject: Bread\n"
        "    template: curious-to-customer/welcome\n"
    )
    post_signup(client, app, sequence="bread-course")
    client.post(link_in(sink.to("ana@example.com")[0], "confirm"))
    with session_scope(settings) as session:
        names = session.scalars(select(Enrollment.sequence).order_by(Enrollment.sequence)).all()
    assert names == ["bread-course", "from-curious-to-customer"]


def test_answers_are_identical_for_new_pending_and_known_addresses(client, app, settings, sink):
    confirmed(settings, "known@example.com")
    gone = confirmed(settings, "gone@example.com")
    client.post(
        unsubscribe_url(settings, gone.id, None, gone.link_key).removeprefix(settings.base_url)
    )
    post_signup(client, app, email="pending@example.com")
    answers = {}
    for email in ("new@example.com", "pending@example.com", "known@example.com",
                  "gone@example.com"):  # fmt: skip
        html = post_signup(client, app, email=email)
        api = post_signup(client, app, json=True, email=email)
        answers[email] = (html.status_code, html.text.replace(email, "EMAIL"),
                          api.status_code, api.get_data())  # fmt: skip
    assert len(set(answers.values())) == 1
    # one confirmation each for the new and the unsubscribed address, however often asked;
    # the pending one got its first and no second within the hour; the active one none
    assert len(sink.to("new@example.com")) == 1
    assert len(sink.to("pending@example.com")) == 1
    assert len(sink.to("known@example.com")) == 0
    assert len(sink.to("gone@example.com")) == 1
    assert subscriber(settings, "gone@example.com").status == "pending"  # a fresh opt-in

    with session_scope(settings) as session:  # an hour later, it may be sent again
        session.execute(update(Subscriber).values(
            confirmation_sent_at=clock.now() - timedelta(minutes=61)))  # fmt: skip
    post_signup(client, app, email="pending@example.com")
    assert len(sink.to("pending@example.com")) == 2


def test_a_signup_answers_with_the_same_work_for_a_new_and_a_known_address(
    client, app, settings, sink
):
    """The work, not the time: the same statements before the answer, nothing built or
    sent before it, and one hand-off after it whatever the address (a new address's
    confirmation used to be built while its answer waited: 16 ms against 7)."""
    confirmed(settings, "known@example.com")
    background = app.extensions["nurture"].background
    engine = get_engine(settings)
    seen: list[str] = []
    handed: list[object] = []
    real = background.send_signup

    def record(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    def hand_on(delivery_id) -> None:
        handed.append(delivery_id)
        real(delivery_id)

    background.send_signup = hand_on
    work = {}
    event.listen(engine, "before_cursor_execute", record)
    try:
        for email in ("new@example.com", "known@example.com"):
            seen.clear(), handed.clear()
            sent = len(sink.messages)
            response = client.post("/subscribe", data={"email": email})
            before = (list(seen), len(handed), len(sink.messages) - sent)
            response.close()
            drain(app)
            work[email] = before, len(handed)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    new, known = work["new@example.com"], work["known@example.com"]
    assert new == known, (new, known)
    assert new[0][1:] == (0, 0) and new[1] == 1  # nothing handed on before the answer
    assert [m.recipients for m in sink.messages] == [["new@example.com"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_operators_floor_makes_every_signup_wait_it_out(client, app, settings):
    app.config[SETTINGS] = replace(app.config[SETTINGS], signup_seconds=0.3)
    confirmed(settings, "known@example.com")

    def seconds(email: str) -> float:
        started = time.perf_counter()
        assert client.post("/subscribe", data={"email": email}).status_code == 200
        return time.perf_counter() - started

    new, known = seconds("new@example.com"), seconds("known@example.com")
    drain(app)
    assert new >= 0.3 and known >= 0.3 and abs(new - known) < 0.1


def test_bad_input_gets_a_clear_400_and_nothing_is_stored(client, app, settings, sink):
    cases = [
        ({"email": ""}, "email", "Enter your email address."),
        ({"email": "ana@"}, "email", "Enter a valid email address"),
        ({"email": "a\x00b@example.com"}, "email", "Enter a valid email address"),
        ({"email": "ana@example.com", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"email": "ana@example.com", "timezone": "x" * 500}, "timezone", "IANA"),
        ({"email": "ana@example.com", "sequence": "nope"}, "sequence", "no sequence named 'nope'"),
        ({"email": "ana@example.com", "tags": "ok, b@d"}, "tags", "is not a tag"),
        ({"email": "ana@example.com", "admin": "1"}, "form", "unknown field 'admin'"),
        ({"email": "ana@example.com", "first_name": "x" * 5000}, "first_name", "too long"),
    ]
    for data, field, message in cases:
        page = client.post("/subscribe", data=data)
        assert page.status_code == 400, data
        assert message in html.unescape(page.text), data
        if field in ("email", "first_name"):  # shown next to its field, announced
            assert f'id="nurture-{field}-error"' in page.text
            assert 'aria-invalid="true" aria-describedby="nurture-' + field in page.text
        api = client.post("/subscribe", json=data)
        assert api.status_code == 400 and message in api.json["fields"][field], data

    for body, kind in [("{not json", "application/json"), ('["a"]', "application/json"),
                       ('{"email": 42}', "application/json")]:  # fmt: skip
        answer = client.post("/subscribe", data=body, content_type=kind)
        assert answer.status_code == 400 and answer.json["error"], body
    huge = client.post("/subscribe", data={"email": "a@example.com", "first_name": "x" * 200_000})
    assert huge.status_code == 413 and "far more data" in huge.text
    drain(app)
    assert count(settings, Subscriber) == 0 and count(settings, Consent) == 0
    assert sink.messages == []


def test_long_first_names_are_trimmed_and_capped(client, app, settings):
    post_signup(client, app, first_name="  Ana\x00\n  " + "b" * 300)
    assert subscriber(settings).first_name == "Ana " + "b" * 96


def test_honeypot_answers_as_usual_and_keeps_nothing(client, app, settings, sink):
    bot = post_signup(client, app, website="http://spam.example")
    person = post_signup(client, app, email="bo@example.com")
    assert bot.status_code == person.status_code == 200
    assert bot.text.replace("ana@", "X@") == person.text.replace("bo@", "X@")
    assert count(settings, Subscriber) == 1
    assert [m.recipients for m in sink.messages] == [["bo@example.com"]]


def test_signups_are_rate_limited_per_client(client, app, settings):
    app.config[SETTINGS] = replace(app.config[SETTINGS], subscribe_limit="3 per minute")
    answers = [post_signup(client, app, email=f"p{i}@example.com").status_code for i in range(3)]
    assert answers == [200, 200, 200]
    page = post_signup(client, app, email="p4@example.com")
    assert page.status_code == 429 and "Too many requests" in page.text
    assert int(page.headers["Retry-After"]) > 0
    api = post_signup(client, app, json=True, email="p5@example.com")
    assert api.status_code == 429 and "Too many requests" in api.json["error"]
    other = client.post("/subscribe", data={"email": "p6@example.com"},
                        environ_base={"REMOTE_ADDR": "10.0.0.9"})  # fmt: skip
    assert other.status_code == 200
    assert count(settings, Subscriber) == 4
    assert client.get("/subscribe").status_code == 200  # the form itself is not limited


def test_signup_limit_and_floor_are_settings(workspace):
    env = {"NURTURE_SUBSCRIBE_LIMIT": "100 per minute", "NURTURE_SIGNUP_SECONDS": "0.1"}
    app = create_app(load_settings(workspace, env=env))
    assert app.config[SETTINGS].subscribe_limit == "100 per minute"
    assert app.config[SETTINGS].signup_seconds == 0.1
    defaults = load_settings(workspace, env={})
    assert (defaults.subscribe_limit, defaults.signup_seconds) == ("5 per minute; 30 per hour", 0)
    with pytest.raises(ConfigError, match="NURTURE_SUBSCRIBE_LIMIT must be a rate"):
        load_settings(workspace, env={"NURTURE_SUBSCRIBE_LIMIT": "lots"})
    with pytest.raises(ConfigError, match="NURTURE_SIGNUP_SECONDS must be a number"):
        load_settings(workspace, env={"NURTURE_SIGNUP_SECONDS": "soon"})


@pytest.mark.redis
def test_signups_are_counted_in_redis_and_in_memory_when_it_is_down():
    limit = "2 per minute; 3 per hour"
    try:
        with own_redis_database(REDIS_URL) as url:
            throttle = Throttle(url)
            hits = [throttle.hit(limit, "10.0.0.1") for _ in range(3)]
            other = throttle.hit(limit, "10.0.0.2")  # counted per client address
            client = redis.Redis.from_url(url, decode_responses=True)
            counts = {
                k.removeprefix(f"{PREFIX}:"): client.get(k) for k in client.keys(f"{PREFIX}:*")
            }
    except (redis.RedisError, LookupError) as e:
        unavailable("Redis", e)
    assert hits[:2] == [0, 0] and 0 < hits[2] <= 60 and other == 0
    # a refusal stops at the full window: the hour did not count it
    assert counts == {"10.0.0.1:2:60": "3", "10.0.0.1:3:3600": "2",
                      "10.0.0.2:2:60": "1", "10.0.0.2:3:3600": "1"}  # fmt: skip
    down = Throttle("redis://127.0.0.1:1/0")  # nothing listens: counted here, not refused
    assert [down.hit("2 per minute", "10.0.0.1") for _ in range(3)][:2] == [0, 0]
    assert down.hit("2 per minute", "10.0.0.1") > 0


def test_client_address_comes_from_a_proxy_header_only_when_told(settings):
    for proxies, expected in ((0, "127.0.0.1"), (1, "203.0.113.7")):
        app = create_app(settings, proxies=proxies)
        app.test_client().post("/subscribe", data={"email": f"p{proxies}@example.com"},
                               headers={"X-Forwarded-For": "203.0.113.7"})  # fmt: skip
        app.extensions["nurture"].background.stop()
        with session_scope(settings) as session:
            sub = get(session, f"p{proxies}@example.com")
            ip = session.scalar(select(Consent.ip).where(Consent.subscriber_id == sub.id))
        assert ip == expected


def test_cors_only_for_listed_origins(settings):
    app = create_app(replace(settings, cors_origins=("https://shop.example",)))
    client = app.test_client()
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    allowed = client.options("/subscribe", headers={"Origin": "https://shop.example", **preflight})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Content-Type" in allowed.headers["Access-Control-Allow-Headers"]
    other = client.options("/subscribe", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in other.headers
    posted = client.post("/subscribe", json={"email": "ana@example.com"},
                         headers={"Origin": "https://shop.example"})  # fmt: skip
    assert posted.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in posted.headers["Vary"]
    app.extensions["nurture"].background.stop()


# -- unsubscribe ---------------------------------------------------------------------


def unsub_path(settings, sub, sequence="from-curious-to-customer") -> str:
    return unsubscribe_url(settings, sub.id, sequence, sub.link_key).removeprefix(settings.base_url)


def test_unsubscribe_page_changes_nothing_then_each_choice_works(client, settings):
    sub = queued_welcome(settings)
    path = unsub_path(settings, sub)
    page = client.get(path)
    assert page.status_code == 200
    assert "Unsubscribe from everything" in page.text
    assert "Only stop “From curious to customer”" in page.text
    assert subscriber(settings).status == "active"
    assert count(settings, Delivery, Delivery.status == "queued") == 1

    just_this = client.post(path, data={"scope": "sequence"})
    assert just_this.status_code == 200 and "no more of that series" in just_this.text
    assert subscriber(settings).status == "active"
    assert count(settings, Enrollment, Enrollment.status == "exited") == 1
    assert count(settings, Delivery, Delivery.status == "cancelled") == 1

    everything = client.post(path, data={"scope": "all"})
    assert everything.status_code == 200 and "You're unsubscribed" in everything.text
    assert subscriber(settings).status == "unsubscribed"
    assert "Resubscribe" in everything.text
    with session_scope(settings) as session:
        actions = session.scalars(select(Consent.action).order_by(Consent.id)).all()
        kinds = session.scalars(select(Event.kind)).all()
    assert actions == ["requested", "confirmed", "withdrawn"]
    assert kinds == ["unsubscribe", "unsubscribe"]


def test_one_click_unsubscribe_needs_no_cookie_and_never_redirects(app, settings):
    sub = queued_welcome(settings)
    client = app.test_client(use_cookies=False)
    answer = client.post(unsub_path(settings, sub), data="List-Unsubscribe=One-Click",
                         content_type=FORM, headers={"User-Agent": "GoogleOneClick/1.0"})  # fmt: skip
    assert answer.status_code == 200
    assert "Location" not in answer.headers and "Set-Cookie" not in answer.headers
    assert subscriber(settings).status == "unsubscribed"  # everything, not one sequence
    assert count(settings, Delivery, Delivery.status == "queued") == 0
    assert count(settings, Delivery, Delivery.status == "cancelled") == 1
    with session_scope(settings) as session:
        withdrawn = session.scalar(select(Consent).where(Consent.action == "withdrawn"))
    assert (withdrawn.form, withdrawn.user_agent) == ("one-click", "GoogleOneClick/1.0")
    repeat = client.post(unsub_path(settings, sub), data="List-Unsubscribe=One-Click",
                         content_type=FORM)  # fmt: skip
    assert (
        repeat.status_code == 200 and count(settings, Consent, Consent.action == "withdrawn") == 1
    )


def test_resubscribe_starts_a_fresh_double_opt_in(client, app, settings, sink):
    sub = confirmed(settings, "ana@example.com")
    path = unsub_path(settings, sub, None)
    client.post(path)
    assert subscriber(settings).status == "unsubscribed"
    page = client.post(path.replace("/unsubscribe/", "/resubscribe/"))
    drain(app)
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert subscriber(settings).status == "pending"
    [received] = sink.to("ana@example.com")
    client.post(link_in(received, "confirm"))
    assert subscriber(settings).status == "active"
    with session_scope(settings) as session:
        actions = session.scalars(select(Consent.action).order_by(Consent.id)).all()
    assert actions == ["requested", "confirmed", "withdrawn", "requested", "confirmed"]


def test_bad_tokens_get_400_and_change_nothing(client, app, settings, sink):
    post_signup(client, app)
    sub = subscriber(settings)
    confirm_path = link_in(sink.to("ana@example.com")[0], "confirm")
    unsub = unsub_path(settings, sub, None)
    token = confirm_path.rsplit("/", 1)[1]
    with freeze_time(clock.now() - timedelta(days=8)):
        old = make_token(settings.secret_key, Purpose.CONFIRM, {"s": sub.id, "k": sub.link_key})
    other_key = make_token("another-secret", Purpose.CONFIRM, {"s": sub.id, "k": sub.link_key})
    bad = {
        "tampered": f"/confirm/{token[:-2]}{'A' if token[-2] != 'A' else 'B'}{token[-1]}",
        "other key": f"/confirm/{other_key}",
        "foreign": "/confirm/" + unsub.rsplit("/", 1)[1],
        "expired": f"/confirm/{old}",
        "garbage": "/confirm/%00%ff..",
        "confirm as unsubscribe": f"/unsubscribe/{token}",
        "confirm as resubscribe": f"/resubscribe/{token}",
        "confirm as click": f"/c/{token}",
        "confirm as open": f"/o/{token}",
    }
    for name, path in bad.items():
        methods = {"resubscribe": ["POST"], "c": ["GET"], "o": ["GET"]}.get(
            path.split("/")[1], ["GET", "POST"]
        )
        for method in methods:
            answer = client.open(path, method=method)
            assert answer.status_code == 400, (name, method)
            assert "This link doesn't work" in html.unescape(answer.text), name
    assert "has expired" in client.get(bad["expired"]).text
    assert subscriber(settings).status == "pending"
    assert count(settings, Consent) == 1 and count(settings, Event) == 0


# -- API and health ------------------------------------------------------------------
def test_events_api_needs_the_bearer_key(settings, app):
    assert app.test_client().post("/api/events", json={}).status_code == 403  # no key set
    keyed = create_app(replace(settings, api_key="s3cret-key"))
    client = keyed.test_client()
    confirmed(settings, "ana@example.com")
    event = {"email": "Ana@Example.com", "event": "demo_booked", "data": {"plan": "pro"}}
    assert client.post("/api/events", json=event).status_code == 401
    wrong = client.post("/api/events", json=event, headers={"Authorization": "Bearer s3cret"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    auth = {"Authorization": "Bearer s3cret-key"}
    done = client.post("/api/events", json=event, headers=auth)
    assert done.status_code == 201 and done.json["event"] == "demo_booked"
    with session_scope(settings) as session:
        [row] = session.scalars(select(Event)).all()
    assert (row.kind, row.data, row.bot, row.delivery_id) == ("demo_booked", {"plan": "pro"},
                                                              False, None)  # fmt: skip
    refusals = [
        ({"email": "nobody@example.com", "event": "x"}, 404),
        ({"email": "ana@example.com", "event": "click"}, 400),
        ({"email": "ana@example.com", "event": "Demo Booked"}, 400),
        ({"email": "ana@example.com", "event": "x", "score": 5}, 400),
        ({"email": "ana@example.com", "event": "x", "data": [1]}, 400),
        ({"email": "ana@example.com"}, 400),
        ({"email": "not-an-address", "event": "x"}, 400),
    ]
    for body, status in refusals:
        answer = client.post("/api/events", json=body, headers=auth)
        assert answer.status_code == status and answer.json["error"], body
    assert client.post("/api/events", data="{", content_type="application/json",
                       headers=auth).status_code == 400  # fmt: skip
    assert count(settings, Event) == 1


def test_healthz_reports_database_and_broker(settings, client):
    ok = client.get("/healthz")
    assert ok.status_code == 200
    assert ok.json == {"status": "ok", "database": "ok", "broker": "embedded", "queue_depth": None}
    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    answer = down.get("/healthz")
    assert answer.status_code == 503
    assert (answer.json["status"], answer.json["broker"]) == ("unreachable", "unreachable")


@pytest.mark.redis
def test_healthz_shows_the_queue_depth_with_redis(settings):
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as e:
        unavailable("Redis", e)
    answer = create_app(replace(settings, redis_url=REDIS_URL)).test_client().get("/healthz")
    assert answer.status_code == 200
    assert answer.json["broker"] == "ok" and isinstance(answer.json["queue_depth"], int)


def test_unknown_pages_and_methods_get_clear_answers(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and "There is nothing at this address." in missing.text
    assert client.delete("/subscribe").status_code == 405
    assert client.get("/api/events").json["error"]
