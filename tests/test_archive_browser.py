"""A reader in a real (headless) Chromium: opens the newsletter email, follows "View this
email in your browser", then the archive. Screens are saved under tests/artifacts/."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from nurture.settings import load_settings
from nurture.web import create_app
from tests.helpers.broadcast import ISSUE, add_people, invoke
from tests.helpers.browser import ARTIFACTS, html_of
from tests.helpers.web import CHROME
from tests.services import free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def site(env, workspace) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site_env = {**env, "NURTURE_BASE_URL": base}
    app = create_app(load_settings(workspace, env=site_env))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, site_env
    server.shutdown()


def test_reader_opens_the_web_version_and_the_archive(site, browser, runner, sink, workspace):  # noqa: F811
    base, env = site
    settings = load_settings(workspace, env=env)
    add_people(settings, [{"email": "ana@example.com", "first_name": "Ana"}])
    assert invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", "now",
                  "--no-local-time").exit_code == 0  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(user_agent=CHROME, viewport={"width": 960, "height": 800})
    problems: list[str] = []
    context.on("console", lambda m: problems.append(m.text) if "Refused" in m.text else None)

    mail = context.new_page()  # the mail client
    mail.set_content(html_of(sink.to("ana@example.com")[0]))
    mail.screenshot(path=str(ARTIFACTS / "broadcast-01-email.png"), full_page=True)
    mail.get_by_role("link", name="View this email in your browser").click()
    mail.wait_for_url(f"{base}/archive/2026-12-monthly")  # through the click redirect
    page = mail
    assert page.title().startswith("December: is it a marketing problem or a sales problem?")
    assert page.get_by_role("heading", level=1).inner_text() == (
        "Is it a marketing problem or a sales problem?"
    )
    assert page.get_by_text("Hi there,").is_visible()
    table = page.locator("article table")
    assert table.is_visible() and table.locator("tr").count() == 6
    # the page's own styles apply: the table header is tinted, not left plain
    assert page.eval_on_selector("article th", "e => getComputedStyle(e).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )
    page.screenshot(path=str(ARTIFACTS / "broadcast-02-web-version.png"), full_page=True)

    page.get_by_role("link", name="All issues").click()
    page.wait_for_url(f"{base}/archive")
    links = page.locator(".archive-list a")
    assert links.count() == 1
    assert links.first.inner_text() == "December: is it a marketing problem or a sales problem?"
    page.screenshot(path=str(ARTIFACTS / "broadcast-03-archive.png"), full_page=True)
    assert page.get_by_role("link", name="Atom feed").get_attribute("href") == "/archive.atom"
    assert problems == []  # no resource refused by the content security policy
    context.close()
