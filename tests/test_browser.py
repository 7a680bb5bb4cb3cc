"""A person in a real (headless) Chromium: signs up, confirms from the email, reads the
first email, clicks a link in it, unsubscribes and comes back. Each screen is saved
under tests/artifacts/ to look at."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from werkzeug.serving import make_server

from nurture import clock
from nurture.settings import load_settings
from nurture.store.engine import session_scope
from nurture.store.tables import Delivery, Event, Subscriber
from nurture.web import create_app
from tests.helpers.browser import ARTIFACTS, html_of
from tests.helpers.web import CHROME, subscriber
from tests.services import free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
BLOG = "https://crumb.example/blog/marketing-vs-sales"


@pytest.fixture
def site(env, workspace) -> Iterator[tuple[str, object]]:
    """The app on a real port (a test harness server; production runs gunicorn)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(workspace, env={**env, "NURTURE_BASE_URL": base})
    app = create_app(settings)
    app.extensions["nurture"].background.start_loop(60)  # woken by a confirmation
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, app
    server.shutdown()
    app.extensions["nurture"].background.stop()


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_a_person_signs_up_confirms_reads_clicks_and_leaves(site, browser, sink, settings):
    base, app = site
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(user_agent=CHROME, viewport={"width": 960, "height": 800})
    page = context.new_page()
    context.route("https://crumb.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<h1>Marketing vs sales</h1>"))  # fmt: skip

    def shot(name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def open_email(received):
        """A fresh tab as the mail client: our pages' CSP must not apply to the email."""
        page.close()
        mail = context.new_page()
        mail.set_content(html_of(received))
        return mail

    # the form, with an error shown next to its field
    page.goto(f"{base}/subscribe")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign up for our emails"
    shot("01-signup-form")
    page.get_by_label("Email address").fill("ana@example")
    page.get_by_role("button", name="Subscribe").click()
    email_box = page.get_by_label("Email address")
    assert email_box.get_attribute("aria-invalid") == "true"
    assert "should have a period" in page.locator("#nurture-email-error").inner_text()
    shot("02-signup-form-error")

    # signing up
    email_box.fill("ana@example.com")
    page.get_by_label("First name (optional)").fill("Ana")
    page.get_by_role("button", name="Subscribe").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Check your inbox"
    shot("03-check-your-inbox")

    # the confirmation email, opened and its button followed
    confirmation = wait_for(lambda: sink.to("ana@example.com"))[0]
    page = open_email(confirmation)
    shot("04-confirmation-email")
    page.get_by_role("link", name="Yes, subscribe me").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm your subscription"
    assert subscriber(settings).status == "pending"  # the GET changed nothing
    shot("05-confirm-page")
    page.get_by_role("button", name="Yes, subscribe me").click()
    assert page.get_by_role("heading", level=1).inner_text() == "You're in, Ana!"
    assert subscriber(settings).status == "active"
    shot("06-confirmed")

    # the first email arrives without waiting for the minute; its link is tracked
    welcome = wait_for(lambda: sink.to("ana@example.com")[1:])[0]
    assert welcome.message["Subject"].startswith("Welcome, Ana")
    html = html_of(welcome)
    assert f'href="{BLOG}"' not in html and f'href="{base}/c/' in html
    page = open_email(welcome)
    shot("07-first-email")
    page.get_by_role("link", name="Marketing vs sales, in plain words").click()
    page.wait_for_url(BLOG)
    assert page.get_by_role("heading").inner_text() == "Marketing vs sales"
    with session_scope(settings) as session:
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.step_id == "welcome"))
        events = session.execute(select(Event.kind, Event.delivery_id, Event.bot)).all()
    assert sorted(events) == [("click", delivery_id, False), ("open", delivery_id, False)]

    # leaving, from the email's footer link, and coming back
    page = open_email(welcome)
    page.get_by_role("link", name="Unsubscribe", exact=True).click()
    assert page.get_by_role("heading", level=1).inner_text() == "Unsubscribe"
    assert subscriber(settings).status == "active"
    shot("08-unsubscribe")
    page.get_by_role("button", name="Unsubscribe from everything").click()
    assert page.get_by_role("heading", level=1).inner_text() == "You're unsubscribed"
    assert subscriber(settings).status == "unsubscribed"
    shot("09-unsubscribed")
    with session_scope(settings) as session:  # one confirmation an hour: let an hour pass
        session.execute(update(Subscriber).values(
            confirmation_sent_at=clock.now() - timedelta(hours=2)))  # fmt: skip
    page.get_by_role("button", name="Resubscribe").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Check your inbox"
    assert len(wait_for(lambda: sink.to("ana@example.com")[2:])) == 1  # a new confirmation

    page.goto(f"{base}/confirm/not-a-token")
    assert page.get_by_role("heading", level=1).inner_text() == "This link doesn't work"
    shot("10-bad-link")
    context.close()


def test_the_form_works_without_javascript(site, browser, sink):
    base, _ = site
    context = browser.new_context(java_script_enabled=False, user_agent=CHROME)
    page = context.new_page()
    page.goto(f"{base}/subscribe")
    page.get_by_label("Email address").fill("bo@example.com")
    page.get_by_role("button", name="Subscribe").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Check your inbox"
    assert wait_for(lambda: sink.to("bo@example.com"))
    context.close()
