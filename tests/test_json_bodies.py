"""JSON bodies that are not what we take get a 400 with a one-line reason, never a 500."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nurture.web import create_app
from tests.test_web import confirmed, count
from nurture.models import Event, Subscriber

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
