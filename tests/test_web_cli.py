"""The web side's commands: form-snippet and events add."""

from __future__ import annotations

from sqlalchemy import select

from nurture.cli import cli
from nurture.store.engine import session_scope
from nurture.store.tables import Event
from nurture.web.forms import HONEYPOT
from tests.helpers.web import confirmed


def test_form_snippet_posts_to_the_public_url_with_a_honeypot(runner, env):
    refused = runner.invoke(cli, ["form-snippet", "--tag", "Website"], env=env)
    assert refused.exit_code == 1
    assert "this form cannot set tags ('website' was sent)" in refused.output
    assert "signup_tags" in refused.output and "Traceback" not in refused.output
    env = {**env, "NURTURE_SIGNUP_TAGS": "website, spring"}
    result = runner.invoke(cli, ["form-snippet", "--tag", "Website", "--tag", "spring"], env=env)
    assert result.exit_code == 0, result.output
    snippet = result.output
    assert (
        '<form class="nurture-form" method="post" action="https://crumb.example/subscribe"'
        in snippet
    )
    assert '<label for="nurture-email">Email address</label>' in snippet
    assert f'name="{HONEYPOT}"' in snippet and 'style="position:absolute;left:-10000px' in snippet
    assert '<input type="hidden" name="tags" value="website spring">' in snippet
    assert 'name="timezone"' in snippet and "resolvedOptions().timeZone" in snippet


def test_form_snippet_refuses_an_unknown_sequence(runner, env):
    result = runner.invoke(cli, ["form-snippet", "--sequence", "nope"], env=env)
    assert result.exit_code == 1
    assert result.output == "Error: there is no sequence named 'nope'\n"


def test_events_add_records_a_custom_event(runner, env, settings):
    confirmed(settings, "ana@example.com")
    result = runner.invoke(cli, ["events", "add", "Ana@Example.com", "demo_booked",
                                 "--data", '{"plan": "pro"}'], env=env)  # fmt: skip
    assert result.exit_code == 0 and result.output == "Recorded demo_booked for Ana@Example.com.\n"
    with session_scope(settings) as session:
        [event] = session.scalars(select(Event)).all()
    assert (event.kind, event.data, event.bot) == ("demo_booked", {"plan": "pro"}, False)

    for args, message in [
        (["nobody@example.com", "demo_booked"], "no subscriber nobody@example.com"),
        (["ana@example.com", "open"], "'open' is recorded by nurture itself"),
        (["ana@example.com", "Demo Booked"], "is not an event name"),
        (["ana@example.com", "x", "--data", "{"], "--data is not JSON"),
        (["ana@example.com", "x", "--data", "[1]"], "--data must be a JSON object"),
    ]:
        failed = runner.invoke(cli, ["events", "add", *args], env=env)
        assert failed.exit_code == 1 and message in failed.output, args
        assert "Traceback" not in failed.output
