"""What the public form and the JSON endpoints refuse: bad JSON (a 400 with a one-line
reason, never a 500), and tags the settings do not let a form set."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nurture.store.tables import Event, Subscriber
from nurture.web import create_app
from tests.helpers.web import confirmed, count

AUTH = {"Authorization": "Bearer s3cret-key", "Content-Type": "application/json"}
JSON = {"Content-Type": "application/json"}
EVENT = '{"email": "ana@example.com", "event": "demo_booked", "data": %s}'
SIGNUP = '{"email": "ana@example.com", "first_name": %s}'

BAD = {
    "deep arrays": ("[" * 60_000, "nested too deeply"),
    "deep objects": ('{"a":' * 12_000, "nested too deeply"),
    "deep but parsable": ("[" * 500 + "]" * 500, "nested too deeply"),
    "NaN": ("NaN", "NaN is not a number JSON allows"),
    "Infinity": ("-Infinity", "-Infinity is not a number JSON allows"),
    "huge float": ("1e400", "too large"),
    "huge integer": ("9" * 5000, "not valid JSON"),
    "broken": ('{"a": ', "not valid JSON"),
    "bad UTF-8": (b'"\xff\xfe"'.decode("latin-1"), None),
}


@pytest.fixture
def keyed(settings):
    app = create_app(replace(settings, api_key="s3cret-key"))
    yield app.test_client()
    app.extensions["nurture"].background.stop()


def one_line_400(answer, words: str | None) -> None:
    assert answer.status_code == 400, answer.get_data()[:200]
    reason = answer.get_json()["error"]
    assert "\n" not in reason and len(reason) < 200
    if words:
        assert words in reason, reason


@pytest.mark.parametrize("name", list(BAD))
def test_events_api_refuses_bad_json_with_a_reason(keyed, settings, name):
    confirmed(settings, "ana@example.com")
    value, words = BAD[name]
    body = (EVENT % value).encode("latin-1") if name == "bad UTF-8" else EVENT % value
    one_line_400(keyed.post("/api/events", data=body, headers=AUTH), words)
    whole = value.encode("latin-1") if name == "bad UTF-8" else value
    one_line_400(keyed.post("/api/events", data=whole, headers=AUTH), words)
    assert count(settings, Event) == 0


@pytest.mark.parametrize("name", list(BAD))
def test_signup_refuses_bad_json_with_a_reason(keyed, settings, name):
    value, words = BAD[name]
    body = (SIGNUP % value).encode("latin-1") if name == "bad UTF-8" else SIGNUP % value
    one_line_400(keyed.post("/subscribe", data=body, headers=JSON), words)
    assert count(settings, Subscriber) == 0


def test_good_json_still_works(keyed, settings):
    confirmed(settings, "ana@example.com")
    answer = keyed.post("/api/events", data=EVENT % '{"plan": "pro", "seats": 2.5}', headers=AUTH)
    assert answer.status_code == 201
    assert keyed.post("/subscribe", data=SIGNUP % '"Bo"', headers=JSON).status_code == 200


# -- tags a public form may set ------------------------------------------------------
def test_a_form_sets_only_the_tags_the_settings_allow(settings, sink):
    from nurture.store.tables import Tag

    closed = create_app(settings).test_client()
    for body in ({"email": "ana@example.com", "tags": ["vip"]}, "email=ana@example.com&tags=vip"):
        if isinstance(body, dict):
            answer = closed.post("/subscribe", json=body)
            assert (
                answer.get_json()["fields"]["tags"] == "this form cannot set tags ('vip' was sent)"
            )
        else:
            answer = closed.post(
                "/subscribe", data=body, content_type="application/x-www-form-urlencoded"
            )
            assert "this form cannot set tags" in answer.text
        assert answer.status_code == 400
    assert count(settings, Subscriber) == 0

    app = create_app(replace(settings, signup_tags=frozenset({"newsletter", "spring"})))
    client = app.test_client()
    refused = client.post("/subscribe", json={"email": "ana@example.com", "tags": "spring vip"})
    assert refused.status_code == 400
    assert "cannot set the tag 'vip': it may set newsletter, spring" in refused.get_json()["error"]
    assert count(settings, Subscriber) == 0
    ok = client.post("/subscribe", json={"email": "ana@example.com", "tags": "Spring"})
    assert ok.status_code == 200
    app.extensions["nurture"].background.drain()
    assert count(settings, Tag, Tag.name == "spring") == 1
    app.extensions["nurture"].background.stop()


def test_signup_tags_come_from_nurture_toml_or_the_environment(workspace):
    from nurture.errors import ConfigError
    from nurture.settings import load_settings

    assert load_settings(workspace, env={}).signup_tags == frozenset()
    toml = workspace / "nurture.toml"
    toml.write_text(toml.read_text() + 'signup_tags = ["Website", "pricing-page"]\n')
    assert load_settings(workspace, env={}).signup_tags == {"website", "pricing-page"}
    env = {"NURTURE_SIGNUP_TAGS": "spring, autumn"}
    assert load_settings(workspace, env=env).signup_tags == {"spring", "autumn"}
    toml.write_text(toml.read_text().replace('["Website", "pricing-page"]', "3"))
    with pytest.raises(ConfigError, match="NURTURE_SIGNUP_TAGS must be a list of names"):
        load_settings(workspace, env={})
