"""Answers to attacks: racing resubscribes, URLs and files that crashed or leaked settings,
templates asking for gigabytes, tokens in the access log, unstorable event data, and
tracking links replayed without end."""

from __future__ import annotations

import os
import stat
import threading
import tracemalloc
from dataclasses import replace
from datetime import timedelta

import pytest
from freezegun import freeze_time
from gunicorn.config import Config
from sqlalchemy import select
from werkzeug.test import EnvironBuilder

from nurture import clock
from nurture.content.rendering import Renderer, sample_context
from nurture.delivery.compose import unsubscribe_url
from nurture.delivery.links import click_url, open_url
from nurture.delivery.mime import Envelope
from nurture.delivery.transports import OutboxTransport
from nurture.envfile import read_env_file
from nurture.errors import ConfigError, SequenceError, TemplateError
from nurture.people.links import resubscribe_by_link
from nurture.people.subscribers import ConsentInfo, unsubscribe
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, DeliveryKind, Event, Subscriber
from nurture.tokens import Purpose, read_claim
from nurture.web import create_app
from nurture.web.server import AccessLog
from tests.helpers.web import CHROME, confirmed, count, queued_welcome

BLOG = "https://crumb.example/blog/marketing-vs-sales"


# -- resubscribing at once ----------------------------------------------------------
def test_racing_resubscribes_rotate_the_key_once_and_queue_one_confirmation(settings):
    ana = confirmed(settings, "ana@example.com")
    with session_scope(settings) as session:
        unsubscribe(session, session.get(Subscriber, ana.id), clock.now())
    token = unsubscribe_url(settings, ana.id, None, ana.link_key).rsplit("/", 1)[1]
    claim = read_claim(settings.secret_key, Purpose.UNSUBSCRIBE, token)
    start, results = threading.Barrier(8), []

    def press() -> None:
        start.wait()
        results.append(resubscribe_by_link(settings, claim, clock.now(), ConsentInfo("web")))

    threads = [threading.Thread(target=press) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued = [delivery for _, delivery in filter(None, results) if delivery is not None]
    assert len(queued) == 1
    with session_scope(settings) as session:
        confirms = session.scalars(select(Delivery.id).where(
            Delivery.subscriber_id == ana.id, Delivery.kind == DeliveryKind.CONFIRM)).all()  # fmt: skip
        now = session.get(Subscriber, ana.id)
        assert confirms == queued and now.status == "pending" and now.link_key != ana.link_key


# -- settings that crashed or showed a password -------------------------------------
@pytest.mark.parametrize(
    ("var", "url", "hidden"),
    [
        ("NURTURE_DATABASE_URL", "postgresql://u:P4ss@w0rdX@127.0.0.1:5432/db", "w0rdX"),
        ("NURTURE_SMTP_URL", "smtp://u:P4ss@w0rdX@127.0.0.1:25", "w0rdX"),
        ("NURTURE_REDIS_URL", "redis://:P4ss@w0rdX@127.0.0.1:6379/0", "w0rdX"),
        ("NURTURE_SMTP_URL", "smtp://u:s3cretpw@[::1", "s3cretpw"),
        ("NURTURE_REDIS_URL", "rediss://u:s3cretpw@[::1/14", "s3cretpw"),
    ],
)
def test_malformed_service_urls_are_one_sentence_that_shows_no_password(
    workspace, var, url, hidden
):
    with pytest.raises(ConfigError) as refused:
        load_settings(workspace, env={var: url})
    message = str(refused.value)
    assert message.startswith(var) and hidden not in message and "P4ss" not in message
    assert ("%40" in message) if "@w0rd" in url else ("IPv6" in message)


def test_an_encoded_at_sign_in_a_password_is_accepted(workspace):
    url = "postgresql://u:P4ss%40w0rd@127.0.0.1:5432/db"
    assert load_settings(workspace, env={"NURTURE_DATABASE_URL": url}).database_url == url


def test_a_dangling_secret_file_link_is_one_sentence(workspace):
    (workspace / ".nurture-secret").symlink_to(workspace / "gone")
    with pytest.raises(ConfigError, match="link to a file that does not exist"):
        load_settings(workspace, env={})


def test_a_secret_key_of_spaces_is_refused_and_an_empty_one_means_unset(workspace):
    with pytest.raises(ConfigError, match="NURTURE_SECRET_KEY holds only white space"):
        load_settings(workspace, env={"NURTURE_SECRET_KEY": "   "})
    assert not (workspace / ".nurture-secret").exists()
    generated = load_settings(workspace, env={"NURTURE_SECRET_KEY": ""}).secret_key
    assert generated == (workspace / ".nurture-secret").read_text().strip()


def test_env_file_lines_end_only_at_newlines(tmp_path):
    path = tmp_path / "nurture.env"
    path.write_text("NURTURE_A=one\u2028two\x0cthree\x1cfour\nNURTURE_B='2'\r\n", encoding="utf-8")
    assert read_env_file(path) == {"NURTURE_A": "one\u2028two\x0cthree\x1cfour", "NURTURE_B": "2"}


# -- the outbox ---------------------------------------------------------------------
def test_outbox_files_are_readable_by_the_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        OutboxTransport(tmp_path / "outbox").send(
            Envelope(
                "hello@crumb.example",
                "ana@example.com",
                "<1@crumb.example>",
                b"Subject: hi\r\n\r\nconfirm",
            )
        )
    finally:
        os.umask(old)
    (eml,) = (tmp_path / "outbox").iterdir()
    assert stat.S_IMODE(eml.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700


# -- templates that ask for gigabytes -----------------------------------------------
BOMBS = {
    "repetition": '{{ "x" * 300000000 }}',
    "list repetition": "{{ [1] * 300000000 }}",
    "power": "{{ 7 ** 300000000 }}",
    "center": '{{ "x".center(300000000) }}',
    "ljust": '{{ "x".ljust(300000000) }}',
    "zfill": '{{ "1".zfill(300000000) }}',
    "format width": '{{ "{:300000000}".format("x") }}',
    "format nested width": '{{ "{:{}}".format("x", 300000000) }}',
    "percent star": '{{ "%*s" % (300000000, "x") }}',
    "percent precision": '{{ "%.300000000f" % 1.5 }}',
    "format filter": '{{ "%*s"|format(300000000, "x") }}',
    "center filter": '{{ "x"|center(300000000) }}',
    "indent filter": '{{ "x"|indent(300000000, true) }}',
    "indent many lines": '{{ ("a\\n" * 50000)|indent(50000) }}',
    "wordwrap": '{{ ("x " * 40000)|wordwrap(1, wrapstring="y" * 90000) }}',
    "replace": '{{ ("x" * 100000).replace("x", "y" * 100000) }}',
    "replace filter": '{{ ("x" * 100000)|replace("x", "y" * 100000) }}',
    "join": '{{ range(100000)|join("x" * 100000) }}',
    "batch": "{{ [1]|batch(300000000, 0)|list }}",
    "slice": "{{ [1, 2]|slice(300000000)|list }}",
    "tojson": '{{ {"a": [1]}|tojson(300000000) }}',
    "expandtabs": '{{ ("\\t" * 100000).expandtabs(100000) }}',
    "lipsum": "{{ lipsum(1000000) }}",
    "doubling by ~": '{% set ns = namespace(s="x") %}{% for i in range(60) %}'
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "doubling by +": '{% set ns = namespace(s="x") %}{% for i in range(60) %}'
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "list doubling": "{% set l = [1] %}{% for i in range(60) %}{{ l.extend(l) }}{% endfor %}",
    "loop output": '{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}',
    "captured block": '{% set b %}{% for i in range(100000) %}{{ "x" * 100000 }}'
    "{% endfor %}{% endset %}{{ b }}",
    "macro": '{% macro m() %}{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}'
    "{% endmacro %}{{ m() }}",
}
#: Far above what the bounds let through (2 MB of output) and far below the attacks.
MEMORY_BOUND = 40_000_000


def _peak(action) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("bomb", BOMBS.values(), ids=BOMBS.keys())
def test_validate_reports_a_template_that_would_grow_without_bound(workspace, bomb):
    emails = workspace / "templates" / "email"
    (emails / "bomb.html").write_text(f"<p>Hi</p>\n\n{bomb}\n")
    problems, peak = _peak(lambda: Renderer(emails).check("bomb", SequenceError("s.yml", 1, "")))
    assert peak < MEMORY_BOUND
    # What the whole template renders is counted as a whole: reported at the file.
    where = "bomb.html:" if bomb == BOMBS["loop output"] else "bomb.html:3:"
    assert len(problems) == 1 and where in str(problems[0])
    assert "templates may not make anything that large" in str(problems[0])


@pytest.mark.parametrize("bomb", ['{{ "x" * 300000000 }}', BOMBS["captured block"]])
def test_rendering_such_a_template_is_a_template_error(workspace, bomb):
    emails = workspace / "templates" / "email"
    (emails / "bomb.html").write_text(f"<p>Hi</p>\n{bomb}\n")
    renderer = Renderer(emails)

    def render() -> object:
        with pytest.raises(TemplateError, match="templates may not make anything that large"):
            renderer.render("bomb", "News", sample_context())

    assert _peak(render)[1] < MEMORY_BOUND


def test_ordinary_templates_still_render(workspace):
    emails = workspace / "templates" / "email"
    (emails / "plain.txt").write_text(
        '{{ "ab" * 3 }} {{ 2 ** 10 }} {{ "%5s|%-3d" % ("a", 4) }} {{ "{:>4}".format("x") }} '
        '{{ [1, 2]|join(", ") }} {{ "a b"|replace(" ", "-") }} {{ "x"|center(5) }} '
        '{{ [1, 2, 3]|batch(2, 0)|list }} {{ [1, 2, 3]|slice(2)|list }} {{ "a" ~ 1 }} '
        "{{ [1] + [2] }} {% set b %}in{{ 1 }}{% endset %}{{ b }}"
        '{% set l = [] %}{% for i in range(3) %}{{ l.append(i) or "" }}{% endfor %}{{ l }}'
    )
    assert Renderer(emails).env.get_template("plain.txt").render() == (
        "ababab 1024     a|4      x 1, 2 a-b   x   [[1, 2], [3, 0]] [[1, 2], [3]] a1 "
        "[1, 2] in1[0, 1, 2]"
    )


# -- the access log -----------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "raw", ["/confirm/SeCrEtToKeN", "//confirm/SeCrEtToKeN", "/%63onfirm/SeCrEtToKeN",
            "/%2563onfirm/SeCrEtToKeN", "/unsubscribe/SeCrEtToKeN/x", "/o//SeCrEtToKeN",
            "/x/../c/SeCrEtToKeN?u=1", "/webhooks/postmark?token=SeCrEtToKeN",
            "//%77ebhooks/postmark?a=1&token=SeCrEtToKeN"],
)  # fmt: skip
def test_the_access_log_never_shows_a_token_however_the_path_is_spelled(settings, raw):
    app = create_app(settings)
    environ = EnvironBuilder(path="/", headers={"User-Agent": CHROME}).get_environ()
    path = raw.split("?")[0]
    environ.update(RAW_URI=raw, PATH_INFO=path.replace("%63", "c"), SERVER_PROTOCOL="HTTP/1.1",
                   HTTP_REFERER=f"https://crumb.example{raw}")  # fmt: skip
    answers: list[str] = []
    body = b"".join(app(environ, lambda status, headers, *_: answers.append(status)))
    assert answers and body is not None
    response = type("Response", (), {"status": answers[0], "sent": len(body)})()
    atoms = AccessLog(Config()).atoms(response, None, environ, timedelta(seconds=0))
    assert "SeCrEtToKeN" not in atoms["r"] and "SeCrEtToKeN" not in atoms["f"]
    assert "<token>" in atoms["r"] or "?<redacted>" in atoms["r"]
    app.extensions["nurture"].background.stop()


# -- event data that cannot be stored -----------------------------------------------
@pytest.mark.parametrize(
    ("raw", "reason"),
    [('"a\\u0000b"', "NUL character"), ('"\\ud800"', "lone surrogate"),
     ('{"\\udfff": 1}', "lone surrogate")],
)  # fmt: skip
def test_event_data_with_nul_or_lone_surrogates_is_refused(settings, raw, reason):
    confirmed(settings, "ana@example.com")
    app = create_app(replace(settings, api_key="s3cret-key"))
    body = f'{{"email": "ana@example.com", "event": "demo_booked", "data": {{"note": {raw}}}}}'
    answer = app.test_client().post("/api/events", data=body, content_type="application/json",
                                    headers={"Authorization": "Bearer s3cret-key"})  # fmt: skip
    assert answer.status_code == 400 and reason in answer.json["error"]
    assert "\n" not in answer.json["error"] and count(settings, Event) == 0
    app.extensions["nurture"].background.stop()


# -- tracking links replayed --------------------------------------------------------
def test_an_email_records_at_most_one_open_and_one_click_a_minute(settings):
    sub = queued_welcome(settings)
    with session_scope(settings) as session:
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == sub.id))
    app = create_app(settings)
    client = app.test_client()
    pixel = open_url(settings, delivery_id).removeprefix(settings.base_url)
    click = click_url(settings, delivery_id, BLOG).removeprefix(settings.base_url)
    with freeze_time(clock.now()) as frozen:
        for _ in range(20):
            image = client.get(pixel, headers={"User-Agent": CHROME})
            assert image.status_code == 200 and image.mimetype == "image/gif"
            answer = client.get(click, headers={"User-Agent": CHROME})
            assert answer.status_code == 302 and answer.headers["Location"] == BLOG
        frozen.tick(timedelta(seconds=61))
        client.get(pixel, headers={"User-Agent": CHROME})
        client.get(click, headers={"User-Agent": CHROME})
    assert count(settings, Event, Event.kind == "open") == 2
    assert count(settings, Event, Event.kind == "click") == 2
    app.extensions["nurture"].background.stop()
