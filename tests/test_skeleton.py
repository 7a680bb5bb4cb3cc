"""The parts of an email made once and reused: the layout, rendered once per step with
holes for each email's own values, and a text part derived from HTML. Every email
comes out exactly as a full render of it would, each reader with their own content,
subject and links, and an edited layout is used at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jinja2
import pytest

from nurture.content.rendering import Renderer, SubscriberView, sample_context
from nurture.content.textify import html_to_text

TRICKY = ("O'Brien & <b>Zoë</b>", 'Ana "the \\ baker"', "{{ not_jinja }}", "\ue020 0< \ue021")


def context(first_name: str, unsubscribe: str) -> dict:
    return {**sample_context(), "unsubscribe_url": unsubscribe,
            "subscriber": SubscriberView(email="x@example.com", first_name=first_name)}  # fmt: skip


def render(renderer: Renderer, template: str, name: str, n: int):
    subject = "Hi {{ subscriber.first_name }} & co"
    ctx = context(name, f"https://crumb.example/unsubscribe/tok{n}?a=1&b=<{n}>")
    return renderer.render(template, subject, ctx, brand="Crumb & Co", preheader="Read <this>")


def full(folder: Path, template: str, name: str, n: int):
    """The same email rendered by a renderer that has seen no other: in full."""
    return render(Renderer(folder), template, name, n)


def test_each_reader_gets_their_own_values_exactly_as_a_full_render(workspace):
    folder = workspace / "templates" / "email"
    renderer = Renderer(folder)
    template = "curious-to-customer/welcome"
    for n, name in enumerate(TRICKY):
        made = render(renderer, template, name, n)
        assert made == full(folder, template, name, n)
        assert f"tok{n}?a=1&amp;b=&lt;{n}&gt;" in made.html
        assert f"tok{n}?a=1&b=<{n}>" in made.text
    assert len(renderer._skeletons._layouts) == 2  # the HTML and text layouts, each kept
    assert all(all(kept.skeletons.values()) for kept in renderer._skeletons._layouts.values())


def write(path: Path, source: str) -> None:
    path.write_text(source)
    stamp = path.stat().st_mtime + 5  # a change Jinja's auto-reload can see at once
    os.utime(path, (stamp, stamp))


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "email"
    folder.mkdir()
    write(folder / "note.html", "<p>Hi {{ subscriber.first_name }}</p>")
    write(folder / "_layout.txt", "{{ content }}\n{{ unsubscribe_url }}\n")
    return folder


OTHER_LAYOUTS = {
    "plain": "<html><body><h1>{{ subject }}</h1>{{ content }}<a href='{{ unsubscribe_url }}'>x</a>"
    "{{ postal_address }}</body></html>",
    "reads the subscriber": "<html><body>{{ subscriber.first_name }} {{ content }}"
    "{{ unsubscribe_url }}</body></html>",
    "tests a hole": "<html><body>{% if 'Zo' in subject %}Zoë!{% endif %}{{ content }}"
    "{{ unsubscribe_url }}</body></html>",
    "filters a hole": "<html><body>{{ subject|upper }}{{ content }}{{ unsubscribe_url }}"
    "</body></html>",
    "random": "<html><body>{{ [1, 2, 3, 4, 5, 6, 7, 8]|random }}{{ content }}"
    "{{ unsubscribe_url }}</body></html>",
    "captures": "<html><body>{% set all %}{{ content }}{% endset %}{{ all|upper }}"
    "{{ unsubscribe_url }}</body></html>",
}


@pytest.mark.parametrize("layout", OTHER_LAYOUTS)
def test_any_layout_renders_each_email_as_in_full(templates, layout):
    write(templates / "_layout.html", OTHER_LAYOUTS[layout])
    for names in (TRICKY, TRICKY[::-1]):  # whichever email comes first
        renderer = Renderer(templates)
        for n, name in enumerate(names):
            made = render(renderer, "note", name, n)
            if layout != "random":
                assert made == full(templates, "note", name, n)
            assert f"tok{n}?a=1&amp;b=&lt;{n}&gt;" in made.html


def test_an_edited_layout_is_used_for_the_next_email(templates):
    write(
        templates / "_layout.html",
        "<html><body>one {{ content }}{{ unsubscribe_url }}</body></html>",
    )
    renderer = Renderer(templates)
    assert "one <p>Hi Ana</p>" in render(renderer, "note", "Ana", 1).html
    write(
        templates / "_layout.html",
        "<html><body>two {{ content }}{{ unsubscribe_url }}</body></html>",
    )
    assert "two <p>Hi Bo</p>" in render(renderer, "note", "Bo", 2).html
    write(templates / "_layout.txt", "{{ content }}\nLeave: {{ unsubscribe_url }}\n")
    assert "Leave: https://crumb.example/unsubscribe/tok3" in render(renderer, "note", "Cy", 3).text


NO_TWIN = (
    "<p>Hi {{ subscriber.first_name }},</p><p>"
    '<a href="https://crumb.example/blog?a=1&amp;b=2">https://crumb.example/blog?a=1&amp;b=2</a>'
    ' and <a href="https://crumb.example/shop">the shop</a>, or'
    ' <a href="{{ unsubscribe_url }}">leave</a>.</p>'
)


def test_a_text_part_derived_once_has_each_emails_own_links(templates):
    """Without a `.txt` twin the text is derived from the HTML once per distinct
    fragment, the tracked links marked: each email still gets its own links."""
    write(templates / "plain.html", NO_TWIN)
    renderer = Renderer(templates)
    for delivery in (1, 2, 1):
        for name in ("Ana", "Bo"):

            def rewrite(url: str, d: int = delivery) -> str:
                return url if "/unsubscribe/" in url else f"https://crumb.example/c/{d}/{len(url)}"

            ctx = context(name, f"https://crumb.example/unsubscribe/{name}")
            made = renderer.render("plain", "Hi", ctx, rewrite_link=rewrite)
            fragment = re.sub(r'href="(https?://[^"]+)"', lambda m: f'href="{rewrite(m.group(1))}"',
                              jinja2.Environment(autoescape=True).from_string(NO_TWIN).render(ctx))  # fmt: skip
            assert made.text.startswith(html_to_text(fragment))
            assert f"Hi {name}," in made.text
            assert (
                f"https://crumb.example/blog?a=1&b=2 (https://crumb.example/c/{delivery}/"
                in made.text
            )
            assert f"leave (https://crumb.example/unsubscribe/{name})" in made.text
