"""A reader in a real (headless) Chromium, with and without JavaScript, on the
preference centre an unsubscribe link opens: unticks a topic and ticks it again,
pauses, then leaves everything, giving a reason. Screens are saved under tests/artifacts/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nurture import clock
from nurture.cli import cli
from nurture.content.sequences import catalog_for
from nurture.delivery.compose import unsubscribe_url
from nurture.people.preferences import left_topics
from nurture.people.subscribers import add
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.web import create_app
from tests.helpers.browser import ARTIFACTS, serving
from tests.helpers.topics import with_topics
from tests.helpers.web import CHROME, subscriber

pytestmark = pytest.mark.browser


@pytest.fixture
def centre(env, workspace) -> Iterator[tuple[str, object]]:
    """The app with topics on a real port, and the settings it runs with."""
    with_topics(workspace)
    site_env: dict[str, str] = {}

    def make(base: str):
        site_env.update(env, NURTURE_BASE_URL=base)
        return create_app(load_settings(workspace, env=site_env))

    with serving(make) as (base, app):
        yield base, load_settings(workspace, env=site_env)
        app.extensions["nurture"].background.stop()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_reader_changes_topics_pauses_and_leaves(centre, browser, runner, javascript):
    base, settings = centre
    with session_scope(settings) as session:
        add(session, catalog_for(settings.sequences_dir), "ana@example.com", clock.now(),
            confirmed=True)  # fmt: skip
    sub = subscriber(settings)
    link = unsubscribe_url(settings, sub.id, "tips", sub.link_key, "tips")
    ARTIFACTS.mkdir(exist_ok=True)
    name = "js" if javascript else "no-js"
    context = browser.new_context(java_script_enabled=javascript, user_agent=CHROME)
    page = context.new_page()

    page.goto(link)
    assert page.get_by_role("heading", level=1).inner_text() == "Your email preferences"
    tips = page.get_by_label("Baking tips")
    assert tips.is_checked() and page.get_by_label("The monthly newsletter").is_checked()
    page.screenshot(path=str(ARTIFACTS / f"centre-{name}-1-open.png"), full_page=True)

    tips.uncheck()
    page.get_by_label("Too many emails").check()
    page.get_by_label("Anything else you'd like to tell us?").fill("Lovely, but weekly is plenty")
    page.get_by_role("button", name="Save my choices").click()
    assert page.get_by_role("status").inner_text() == "You won't get “Baking tips” any more."
    assert not page.get_by_label("Baking tips").is_checked()
    with session_scope(settings) as session:
        assert left_topics(session, sub.id) == {"tips"}

    page.get_by_label("Baking tips").check()
    page.get_by_role("button", name="Save my choices").click()
    assert page.get_by_role("status").inner_text() == "Welcome back to “Baking tips”."

    page.get_by_role("button", name="Pause everything for 30 days").click()
    assert page.get_by_role("status").inner_text().startswith("Paused: nothing from us until")
    assert page.get_by_role("button", name="Resume my emails now").is_visible()
    page.screenshot(path=str(ARTIFACTS / f"centre-{name}-2-paused.png"), full_page=True)

    page.get_by_label("I never signed up").check()
    page.get_by_role("button", name="Unsubscribe from everything").click()
    assert page.get_by_role("heading", level=1).inner_text() == "You're unsubscribed"
    page.screenshot(path=str(ARTIFACTS / f"centre-{name}-3-left.png"), full_page=True)
    context.close()

    env = {"NURTURE_WORKSPACE": str(settings.workspace),
           "NURTURE_DATABASE_URL": settings.database_url}  # fmt: skip
    shown = runner.invoke(cli, ["subscribers", "show", "ana@example.com"], env=env).output
    assert shown.startswith("ana@example.com  unsubscribed")
    assert 'preferences because Too many emails: "Lovely, but weekly is plenty"' in shown
    assert "unsubscribe because I never signed up" in shown
