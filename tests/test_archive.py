"""The public archive: the list, each issue's web version (nothing personal in it) and
an Atom feed that parses as Atom."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from nurture.web import create_app
from tests.helpers.broadcast import ISSUE, add_people, invoke, issue_file

ATOM = "{http://www.w3.org/2005/Atom}"
VOID = {"meta", "link", "br", "img", "hr", "input", "col", "source", "wbr", "area", "base"}


class Checker(HTMLParser):
    """Every element closed in order, as a validator would insist."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:]} at {self.getpos()}")
        else:
            self.open.pop()


def checked(page: str) -> Checker:
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert page.startswith("<!doctype html>")
    assert checker.problems == [] and checker.open == []
    assert [t for t, a in checker.tags if t == "html"] == ["html"]
    assert sum(t == "h1" for t, _ in checker.tags) == 1
    return checker


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


@pytest.fixture
def issues(runner, env, settings, workspace, sink):
    """Sent, archived: the December issue. Sent, not listed: a note to customers.
    A draft with a test copy, and an archived issue scheduled for next week."""
    add_people(settings, [
        {"email": "ana@example.com", "first_name": "Ana", "attributes": {"plan": "platinum-7"}},
        {"email": "bo@example.com", "first_name": "Bo"},
    ], tags={"ana@example.com": ["customers"]})  # fmt: skip
    assert invoke(runner, env, "broadcast", "send", str(ISSUE), "--at", "now",
                  "--no-local-time").exit_code == 0  # fmt: skip
    note = issue_file(workspace, 'subject: "A note for customers"\nsegment: tag:customers',
                      "Thank you, {{ subscriber.first_name or 'reader' }} ({{ subscriber.email }}).\n")  # fmt: skip
    assert invoke(runner, env, "broadcast", "send", str(note)).exit_code == 0
    draft = workspace / "draft.md"
    draft.write_text('---\nsubject: "Not yet"\narchive: true\n---\nSoon.\n')
    assert (
        invoke(
            runner, env, "broadcast", "send", str(draft), "--test-to", "ana@example.com"
        ).exit_code
        == 0
    )
    later = workspace / "later.md"
    later.write_text('---\nsubject: "Next week"\narchive: true\n---\nLater.\n')
    at = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d %H:%M")
    assert invoke(runner, env, "broadcast", "send", str(later), "--at", at).exit_code == 0
    return sink


def view_link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"View this email in your browser: (\S+)", text).group(1)


def test_archive_lists_only_published_archived_issues(client, issues):
    page = client.get("/archive")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    checked(html)
    assert "December: is it a marketing problem or a sales problem?" in html
    assert 'href="https://crumb.example/archive/2026-12-monthly"' in html
    for absent in ("A note for customers", "Not yet", "Next week"):
        assert absent not in html
    assert 'href="/archive.atom"' in html and 'href="/subscribe"' in html
    # the page may show a style block (by nonce) and outside images, nothing else
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<style nonce="{nonce}">' in html
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_web_version_has_nothing_personal(client, issues):
    received = issues.to("ana@example.com")
    december = next(m.message for m in received if m.message["Subject"].startswith("December"))
    link = view_link(december)
    assert link == "https://crumb.example/archive/2026-12-monthly"
    page = client.get(link.removeprefix("https://crumb.example"))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    checked(html)
    assert "Hi there," in html and "<table>" in html  # the reader, not Ana
    for personal in ("Ana", "ana@example.com", "/unsubscribe/", "/c/", "/o/", "platinum-7"):
        assert personal not in html, personal
    assert "<title>December: is it a marketing problem or a sales problem? ·" in html


def test_unlisted_issue_is_reachable_from_its_email_only(client, issues):
    [note] = [
        m.message
        for m in issues.to("ana@example.com")
        if m.message["Subject"] == "A note for customers"
    ]
    link = view_link(note)
    assert re.fullmatch(r"https://crumb\.example/archive/issue-[0-9a-f]{8}", link)
    page = client.get(link.removeprefix("https://crumb.example")).get_data(as_text=True)
    assert "Thank you, reader ()." in page and "ana@example.com" not in page
    assert "All issues" not in page
    assert client.get("/archive/issue").status_code == 404


def test_drafts_and_scheduled_issues_are_not_published(client, issues):
    [test_copy] = [
        m.message for m in issues.to("ana@example.com") if m.message["Subject"] == "[TEST] Not yet"
    ]
    assert client.get(view_link(test_copy).removeprefix("https://crumb.example")).status_code == 404
    assert client.get("/archive/later").status_code == 404


def test_feed_is_atom_with_the_required_elements(client, issues):
    answer = client.get("/archive.atom")
    assert answer.status_code == 200
    assert answer.mimetype == "application/atom+xml"
    root = ET.fromstring(answer.data)  # noqa: S314 - the feed our own app wrote
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated"):
        assert root.find(f"{ATOM}{name}").text
    assert root.find(f"{ATOM}id").text == "https://crumb.example/archive"
    assert root.find(f"{ATOM}author/{ATOM}name").text == "Maya at Crumb & Co"
    datetime.fromisoformat(root.find(f"{ATOM}updated").text)
    [entry] = root.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}id").text == "https://crumb.example/archive/2026-12-monthly"
    assert entry.find(f"{ATOM}title").text.startswith("December:")
    datetime.fromisoformat(entry.find(f"{ATOM}updated").text)
    assert entry.find(f"{ATOM}link").get("href") == entry.find(f"{ATOM}id").text
    assert entry.find(f"{ATOM}summary").text.startswith("A bakery, a web shop")
    content = entry.find(f"{ATOM}content")
    assert content.get("type") == "html" and "Hi there," in content.text
    assert "Ana" not in answer.get_data(as_text=True)


def test_empty_archive(client, settings):
    assert "No issues yet" in client.get("/archive").get_data(as_text=True)
    root = ET.fromstring(client.get("/archive.atom").data)  # noqa: S314 - our own feed
    assert root.find(f"{ATOM}updated").text and root.findall(f"{ATOM}entry") == []
    assert client.get("/archive/anything").status_code == 404
