"""The reader's choices, as the reader lives them: what arrives over real SMTP after
leaving a topic, pausing, one-click unsubscribing or signing up for some topics only."""

from __future__ import annotations

import html
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from nurture import clock
from nurture.cli import cli
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import unsubscribe_url
from nurture.journeys.scheduling import claim_due
from nurture.people.subscribers import add
from nurture.queue import dispatch
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Subscriber
from nurture.web import create_app
from tests.helpers.journeys import REAL_TIME_MODULES, run_cron
from tests.helpers.topics import issue, subjects, unsubscribe_path, with_topics
from tests.helpers.web import count, drain, link_in, post_signup, subscriber

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PAUSED_UNTIL = START + timedelta(days=30)


@pytest.fixture
def topical(workspace):
    return with_topics(workspace)


@pytest.fixture
def client(settings, topical):
    app = create_app(replace(settings, subscribe_limit="1000 per minute"))
    yield app.test_client()
    app.extensions["nurture"].background.stop()


def cli_ok(runner, env, *args: str) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def start_two_readers(runner, env) -> None:
    for who in ("ana", "bo"):
        cli_ok(runner, env, "subscribers", "add", f"{who}@example.com", "--confirmed")
    cli_ok(runner, env, "send-due")


def test_emails_of_a_topic_left_never_arrive(runner, env, sink, client, tmp_path):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        assert tip.message["List-Id"] == "Baking tips <tips.crumb.example>"
        page = page_text(client.get(unsubscribe_path(tip)))
        assert "Your email preferences" in page
        assert 'value="tips" checked' in page and "Baking tips" in page
        assert "The monthly newsletter" in page
        left = client.post(unsubscribe_path(tip), data={"action": "leave-topic"})
        assert left.status_code == 200
        assert "You won't get “Baking tips” any more." in page_text(left)
        assert 'value="tips" checked' not in page_text(left)
        cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "Tips special", "tips")))
        cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
        run_cron(runner, env, frozen, START + timedelta(days=10))

    assert subjects(sink, "ana@example.com") == ["Tip one", "December"]
    assert sorted(subjects(sink, "bo@example.com")) == [
        "December", "Tip one", "Tip three", "Tip two", "Tips special"
    ]  # fmt: skip
    shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert "topics left: tips" in shown
    assert "left the topic 'tips'" in shown
    assert "withdrawn" in shown and "topics: tips" in shown


def test_an_email_queued_before_the_reader_left_its_topic_is_skipped(settings, sink, topical):
    catalog = catalog_for(settings.sequences_dir)
    with session_scope(settings) as session:
        add(session, catalog, "ana@example.com", clock.now(), confirmed=True)
    with session_scope(settings) as session:
        ids = claim_due(session, catalog, clock.now())
    app = create_app(settings)
    sub = subscriber(settings)
    path = unsubscribe_url(settings, sub.id, "tips", sub.link_key, "tips")
    answer = app.test_client().post(path.removeprefix("https://crumb.example"),
                                    data={"action": "save", "topic": "newsletter"})  # fmt: skip
    assert "You won't get “Baking tips” any more." in page_text(answer)
    dispatch(settings, ids)
    assert sink.to("ana@example.com") == []


def test_a_pause_holds_everything_then_the_sequence_goes_on(runner, env, sink, client, tmp_path):
    arrivals: dict[str, datetime] = {}

    def note(now: datetime) -> None:
        for m in sink.to("ana@example.com"):
            arrivals.setdefault(str(m.message["Subject"]), now)

    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        paused = client.post(unsubscribe_path(tip), data={"action": "pause:30"})
        assert "Paused: nothing from us until 1 April 2026." in page_text(paused)
        assert "Your emails are paused until <strong>1 April 2026</strong>" in page_text(paused)
        run_cron(runner, env, frozen, START + timedelta(days=3))
        shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
        assert "paused until 2026-04-01 08:00 UTC" in shown
        assert "(paused by the reader until 2026-04-01 08:00 UTC)" in shown
        cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
        run_cron(runner, env, frozen, PAUSED_UNTIL - timedelta(minutes=1))
        assert subjects(sink, "ana@example.com") == ["Tip one"]
        run_cron(runner, env, frozen, START + timedelta(days=40), each=note)

    assert subjects(sink, "ana@example.com") == ["Tip one", "Tip two", "Tip three"]
    assert PAUSED_UNTIL <= arrivals["Tip two"] < PAUSED_UNTIL + timedelta(minutes=30)
    assert arrivals["Tip three"] >= arrivals["Tip two"] + timedelta(days=2)
    assert sorted(subjects(sink, "bo@example.com")) == [
        "December", "Tip one", "Tip three", "Tip two"
    ]  # fmt: skip


def test_an_email_already_queued_waits_out_the_pause(runner, env, settings, sink, topical):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        cli_ok(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
        catalog = catalog_for(settings.sequences_dir)
        with session_scope(settings) as session:
            ids = claim_due(session, catalog, clock.now())
        sub = subscriber(settings)
        path = unsubscribe_url(settings, sub.id, "tips", sub.link_key, "tips")
        client = create_app(settings).test_client()
        client.post(path.removeprefix("https://crumb.example"), data={"action": "pause:90"})
        dispatch(settings, ids)  # the queue message arrives during the pause
        assert sink.to("ana@example.com") == []
        with session_scope(settings) as session:
            held = session.get(Delivery, ids[0])
            assert (held.status, held.next_attempt_at) == ("retry", START + timedelta(days=90))
            assert held.attempts == 0
        run_cron(runner, env, frozen, START + timedelta(days=89))
        assert sink.to("ana@example.com") == []
        run_cron(runner, env, frozen, START + timedelta(days=93))
    assert subjects(sink, "ana@example.com") == ["Tip one", "Tip two"]


def test_resuming_early_sends_what_the_pause_held(runner, env, sink, client):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        client.post(unsubscribe_path(tip), data={"action": "pause:90"})
        frozen.move_to(START + timedelta(days=2, minutes=1))
        cli_ok(runner, env, "send-due")
        assert subjects(sink, "ana@example.com") == ["Tip one"]
        resumed = client.post(unsubscribe_path(tip), data={"action": "resume"})
        assert "Your emails have resumed." in page_text(resumed)
        assert "Resume my emails now" not in page_text(resumed)
        cli_ok(runner, env, "send-due")
    assert subjects(sink, "ana@example.com") == ["Tip one", "Tip two"]


def test_one_click_leaves_everything_at_once(runner, env, sink, client, tmp_path):
    with freeze_time(START, ignore=REAL_TIME_MODULES) as frozen:
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        assert tip.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        answer = client.post(unsubscribe_path(tip), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200 and "Set-Cookie" not in answer.headers
        assert "You're unsubscribed" in page_text(answer)
        cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
        run_cron(runner, env, frozen, START + timedelta(days=10))
    assert subjects(sink, "ana@example.com") == ["Tip one"]
    assert cli_ok(runner, env, "subscribers", "show", "ana@example.com").startswith(
        "ana@example.com  unsubscribed"
    )


def test_a_form_post_without_an_action_changes_nothing_and_shows_the_page_again(
    runner, env, sink, client
):
    start_two_readers(runner, env)
    [tip] = sink.to("ana@example.com")
    for data in ({}, {"reason": "too-many"}, {"action": "bogus"}):
        answer = client.post(unsubscribe_path(tip), data=data)
        assert answer.status_code == 200
        assert "Nothing changed: choose one of the options below." in page_text(answer)
        assert 'value="tips" checked' in page_text(answer)
    shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert shown.startswith("ana@example.com  active") and "withdrawn" not in shown
    gone = client.post(unsubscribe_path(tip), data={"action": "leave-all"})
    assert "You're unsubscribed" in page_text(gone)
    assert cli_ok(runner, env, "subscribers", "show", "ana@example.com").startswith(
        "ana@example.com  unsubscribed"
    )


def test_a_signup_for_some_topics_gets_those_only(runner, env, settings, sink, client, tmp_path):
    app = client.application
    form = client.get("/subscribe").get_data(as_text=True)
    assert 'name="topics" value="newsletter"' in form and "Baking tips" in form
    answer = post_signup(client, app, topics=["", "tips"])
    assert answer.status_code == 200
    client.post(link_in(sink.to("ana@example.com")[0], "confirm"))
    drain(app)
    cli_ok(runner, env, "send-due")
    cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
    assert subjects(sink, "ana@example.com")[1:] == ["Tip one"]
    shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert shown.count("topics: tips") == 2  # the request and the confirmation
    assert "topics left: newsletter" in shown


def test_a_signup_with_a_bad_topic_choice_is_refused_and_stores_nothing(settings, client):
    app = client.application
    none = post_signup(client, app, email="bo@example.com", topics=[""])
    assert none.status_code == 400 and "Choose at least one topic." in page_text(none)
    assert 'value="tips"' in page_text(none)  # the form is shown again, with its topics
    wrong = post_signup(client, app, json=True, email="bo@example.com", topics=["tipz"])
    assert wrong.status_code == 400
    assert wrong.json["fields"]["topics"] == (
        "this form does not offer the topic 'tipz': it offers newsletter, tips"
    )
    assert count(settings, Subscriber) == 0


def test_json_signup_names_its_topics(runner, env, settings, sink, client):
    answer = post_signup(client, client.application, json=True, topics=["newsletter"])
    assert answer.status_code == 200
    with session_scope(settings) as session:
        attributes = session.scalar(select(Subscriber.attributes))
    assert attributes["signup_topics"] == "newsletter -tips"


def test_the_reason_a_reader_gives_is_recorded(runner, env, sink, client):
    start_two_readers(runner, env)
    [tip] = sink.to("ana@example.com")
    saved = client.post(unsubscribe_path(tip), data={
        "action": "save", "topic": "newsletter", "reason": "too-many",
        "reason_text": "Fewer,\nplease",
    })  # fmt: skip
    assert "You won't get “Baking tips” any more." in page_text(saved)
    gone = client.post(unsubscribe_path(tip), data={"action": "leave-all",
                                                    "reason": "never-signed-up"})  # fmt: skip
    assert "You're unsubscribed" in page_text(gone)
    shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert 'preferences because Too many emails: "Fewer, please"' in shown
    assert "unsubscribe because I never signed up" in shown


def test_show_quotes_every_reason_alike_and_a_reader_who_left_has_no_pause(
    runner, env, settings, sink, client
):
    start_two_readers(runner, env)
    [tip] = sink.to("ana@example.com")
    client.post(unsubscribe_path(tip), data={"action": "pause:30"})
    client.post(unsubscribe_path(tip), data={"action": "leave-topic", "reason": "not-relevant",
                                             "reason_text": "I don't bake"})  # fmt: skip
    assert "paused until" in cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    client.post(unsubscribe_path(tip), data={"action": "leave-all", "reason": "other",
                                             "reason_text": "Moving away"})  # fmt: skip
    shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert 'preferences because Not relevant to me: "I don\'t bake"' in shown
    assert 'unsubscribe because Another reason: "Moving away"' in shown
    assert "paused until" not in shown
    with session_scope(settings) as session:
        assert session.scalar(select(Subscriber.paused_until).where(
            Subscriber.email == "ana@example.com")) is None  # fmt: skip


def test_without_topics_the_unsubscribe_page_is_as_before(runner, env, sink, settings):
    cli_ok(runner, env, "subscribers", "add", "ana@example.com", "--confirmed")
    cli_ok(runner, env, "send-due")
    [welcome] = sink.to("ana@example.com")
    assert welcome.message["List-Id"] == (
        "from-curious-to-customer <from-curious-to-customer.crumb.example>"
    )
    page = page_text(create_app(settings).test_client().get(unsubscribe_path(welcome)))
    assert "Unsubscribe from everything" in page and "Your email preferences" not in page


def test_without_signup_topics_a_signup_cannot_choose_topics(settings):
    app = create_app(settings)
    answer = post_signup(app.test_client(), app, json=True, topics=["tips"])
    assert answer.status_code == 400
    assert answer.json["fields"] == {"topics": "this form cannot choose topics (list those it "
                                     "may offer in signup_topics in nurture.toml)"}  # fmt: skip
    assert count(settings, Subscriber) == 0
    app.extensions["nurture"].background.stop()


@pytest.mark.parametrize("days", ["²", "9" * 5000, "45", "", " 30"])
def test_a_pause_the_page_does_not_offer_is_refused_and_changes_nothing(
    runner, env, sink, client, days
):
    with freeze_time(START, ignore=REAL_TIME_MODULES):
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        refused = client.post(unsubscribe_path(tip), data={"action": f"pause:{days}"})
        assert refused.status_code == 400
        assert "A pause lasts 30 or 90 days." in page_text(refused)
        shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
    assert "paused" not in shown
    assert "active" in shown


def test_signing_up_again_after_leaving_ends_the_old_pause(runner, env, sink, client, tmp_path):
    with freeze_time(START, ignore=REAL_TIME_MODULES):
        start_two_readers(runner, env)
        [tip] = sink.to("ana@example.com")
        client.post(unsubscribe_path(tip), data={"action": "pause:30"})
        left = client.post(unsubscribe_path(tip), data={"List-Unsubscribe": "One-Click"})
        assert left.status_code == 200
        assert post_signup(client, client.application).status_code == 200
        confirmation = sink.to("ana@example.com")[-1]
        assert client.post(link_in(confirmation, "confirm")).status_code == 200
        shown = cli_ok(runner, env, "subscribers", "show", "ana@example.com")
        assert "active" in shown and "paused" not in shown
        cli_ok(runner, env, "broadcast", "send", str(issue(tmp_path, "December")))
        cli_ok(runner, env, "send-due")
    assert subjects(sink, "ana@example.com")[-1] == "December"
