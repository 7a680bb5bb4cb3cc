"""Opens and clicks: links signed at render time, redirects only where we signed, bots flagged."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from nurture import clock
from nurture.content.rendering import SubscriberView
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import compose_step, unsubscribe_url
from nurture.delivery.links import click_url, link_rewriter, open_url, read_click, read_open
from nurture.people.subscribers import forget, get
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event
from nurture.tokens import Purpose, make_token
from nurture.web import create_app
from tests.helpers.web import CHROME, count, queued_welcome

BLOG = "https://crumb.example/blog/marketing-vs-sales"
EVIL = "https://evil.example/login"
SEQUENCE = "from-curious-to-customer"


def compose_welcome(settings, delivery_id):
    seq = catalog_for(settings.sequences_dir).get(SEQUENCE)
    view = SubscriberView(email="ana@example.com", first_name="Ana")
    return compose_step(settings, seq, seq.step("welcome"), view, 5, delivery_id)


def queued_delivery(settings) -> int:
    sub = queued_welcome(settings)
    with session_scope(settings) as session:
        return session.scalar(select(Delivery.id).where(Delivery.subscriber_id == sub.id))


def path_of(url: str) -> str:
    return url.removeprefix("https://crumb.example")


@pytest.fixture
def client(settings):
    app = create_app(settings)
    yield app.test_client()
    app.extensions["nurture"].background.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@freeze_time("2026-05-04 09:00:00")  # a token carries its signing second: compare like for like
def test_links_become_signed_redirects_and_an_open_pixel_is_added(settings):
    rendered = compose_welcome(settings, 7).rendered
    hrefs = re.findall(r'href="([^"]+)"', rendered.html)
    clicks = [h for h in hrefs if h.startswith("https://crumb.example/c/")]
    assert [read_click(settings, h.rsplit("/", 1)[1]) for h in clicks] == [(7, BLOG)]
    assert BLOG not in hrefs
    assert unsubscribe_url(settings, 5, SEQUENCE, "") in hrefs  # our own link is left alone
    [pixel] = re.findall(r'<img src="(https://crumb.example/o/[^"]+)"[^>]*></body>', rendered.html)
    assert read_open(settings, pixel.rsplit("/", 1)[1]) == 7
    assert BLOG in rendered.text and "/c/" not in rendered.text  # the .txt twin, as written

    for plain in (compose_welcome(replace(settings, tracking=False), 7).rendered,
                  compose_welcome(settings, None).rendered):  # off, and a preview  # fmt: skip
        assert f'href="{BLOG}"' in plain.html
        assert "/c/" not in plain.html and "/o/" not in plain.html


def test_escaped_links_are_signed_as_the_reader_sees_them(workspace):
    from nurture.settings import load_settings

    settings = load_settings(workspace, env={"NURTURE_BASE_URL": "https://crumb.example"})
    rewrite = link_rewriter(settings, 3)
    signed = rewrite("https://shop.example/?a=1&amp;b=2")
    assert read_click(settings, signed.rsplit("/", 1)[1]) == (3, "https://shop.example/?a=1&b=2")
    assert rewrite(unsubscribe_url(settings, 1, None, "k")) == unsubscribe_url(
        settings, 1, None, "k"
    )


def test_click_goes_only_to_the_destination_we_signed(client, settings):
    delivery_id = queued_delivery(settings)
    good = path_of(click_url(settings, delivery_id, BLOG))
    answer = client.get(good, headers={"User-Agent": CHROME})
    assert answer.status_code == 302 and answer.headers["Location"] == BLOG
    assert "no-store" in answer.headers["Cache-Control"]
    smuggled = client.get(f"{good}?url={EVIL}&next={EVIL}", headers={"User-Agent": CHROME})
    assert smuggled.headers["Location"] == BLOG

    payload, stamp, signature = good.rsplit("/", 1)[1].split(".")
    forged_payload = base64.urlsafe_b64encode(
        json.dumps({"d": delivery_id, "u": EVIL}).encode()
    ).decode().rstrip("=")  # fmt: skip
    refused = {
        "other key": "/c/" + make_token("not-our-key", Purpose.CLICK, {"d": 1, "u": EVIL}),
        "forged destination": f"/c/{forged_payload}.{stamp}.{signature}",
        "not http": path_of(click_url(settings, delivery_id, "javascript:alert(1)")),
        "open token": "/c/" + path_of(open_url(settings, delivery_id)).rsplit("/", 1)[1],
        "no destination": "/c/" + make_token(settings.secret_key, Purpose.CLICK, {"d": 1}),
    }
    for name, path in refused.items():
        answer = client.get(path)
        assert answer.status_code == 400 and "Location" not in answer.headers, name
    with session_scope(settings) as session:
        events = session.execute(select(Event.kind, Event.delivery_id, Event.bot, Event.data)
                                 .where(Event.kind == "click").order_by(Event.id)).all()  # fmt: skip
    # the second click within the minute is answered, not recorded again
    assert events == [("click", delivery_id, False, {"url": BLOG})]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_open_pixel_records_opens_and_flags_scanners_and_prefetchers(client, settings):
    delivery_id = queued_delivery(settings)
    path = path_of(open_url(settings, delivery_id))
    agents = {
        CHROME: False,
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)": False,
        "Mozilla/5.0": True,  # Apple Mail Privacy Protection fetches every image up front
        "": True,
        "curl/8.4.0": True,
        "Mozilla/5.0 (compatible; Barracuda Sentinel)": True,
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.5)": True,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0": True,
    }
    with freeze_time(clock.now()) as frozen:  # one open an email a minute is recorded
        for agent in agents:
            image = client.get(path, headers={"User-Agent": agent})
            assert image.status_code == 200 and image.mimetype == "image/gif"
            assert image.data.startswith(b"GIF89a")
            assert "no-store" in image.headers["Cache-Control"]
            frozen.tick(timedelta(seconds=61))
        assert client.head(path, headers={"User-Agent": CHROME}).status_code == 200
    with session_scope(settings) as session:
        flags = session.scalars(select(Event.bot).where(Event.kind == "open").order_by(Event.id))
        assert list(flags) == [*agents.values(), True]  # a HEAD probe is no reader either


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_tracking_off_links_still_work_and_nothing_is_recorded(settings):
    delivery_id = queued_delivery(settings)
    client = create_app(replace(settings, tracking=False)).test_client()
    click = client.get(path_of(click_url(settings, delivery_id, BLOG)))
    assert click.status_code == 302 and click.headers["Location"] == BLOG
    assert client.get(path_of(open_url(settings, delivery_id))).status_code == 200
    assert count(settings, Event) == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_links_of_a_forgotten_subscriber_still_redirect_and_record_nothing(client, settings):
    delivery_id = queued_delivery(settings)
    with session_scope(settings) as session:
        forget(session, get(session, "ana@example.com"), clock.now())
    click = client.get(path_of(click_url(settings, delivery_id, BLOG)))
    assert click.status_code == 302 and click.headers["Location"] == BLOG
    assert count(settings, Event) == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stats_count_the_people_who_opened_clicked_and_left(client, settings, env, runner):
    from nurture.cli import cli
    from nurture.send_due import run_send_due
    from tests.helpers.web import confirmed

    ana, bo = confirmed(settings, "ana@example.com"), confirmed(settings, "bo@example.com")
    run_send_due(settings)
    with session_scope(settings) as session:
        sent = dict(session.execute(select(Delivery.subscriber_id, Delivery.id)).all())
    person, prefetcher = {"User-Agent": CHROME}, {"User-Agent": "Mozilla/5.0"}
    client.get(path_of(open_url(settings, sent[ana.id])), headers=person)
    client.get(path_of(open_url(settings, sent[ana.id])), headers=person)  # twice: one person
    client.get(path_of(click_url(settings, sent[ana.id], BLOG)), headers=person)
    client.get(path_of(open_url(settings, sent[bo.id])), headers=prefetcher)  # not a reader
    client.post(path_of(unsubscribe_url(settings, bo.id, SEQUENCE, bo.link_key)),
                data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")  # fmt: skip

    result = runner.invoke(cli, ["stats", SEQUENCE], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.strip().startswith("step"))
    welcome = next(line for line in lines if line.strip().startswith("welcome"))
    counts = dict(zip(header.split()[2:], welcome.split()[2:], strict=True))
    assert (counts["sent"], counts["opened"], counts["clicked"], counts["unsubscribed"]) == (
        "2", "1", "1", "1",
    )  # fmt: skip
