"""CSS inlined once per template: every email comes out as if inlined on its own, and a
template that cannot be pre-inlined safely is inlined per email instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.content.inline import same_page
from nurture.content.rendering import Renderer, SubscriberView, inliner, sample_context

STEPS = sorted(
    p.stem
    for p in (Path(__file__).parent.parent / "templates/email/curious-to-customer").glob("*.html")
)


def context(first_name: str) -> dict:
    return {
        **sample_context(),
        "subscriber": SubscriberView(email="x@example.com", first_name=first_name),
    }


def per_email(renderer: Renderer, template: str, ctx: dict) -> str:
    """What the email would be if its CSS were inlined after rendering."""
    renderer._inlined[template] = (
        renderer.env.get_template("_layout.html"),
        renderer.env.get_template(f"{template}.html"),
        None,
    )
    try:
        return renderer.render(template, "Hi", ctx, brand="Crumb").html
    finally:
        del renderer._inlined[template]


@pytest.mark.parametrize("step", STEPS)
def test_every_example_step_is_preinlined_and_renders_the_same(workspace, step):
    renderer = Renderer(workspace / "templates" / "email")
    template = f"curious-to-customer/{step}"
    assert renderer._preinlined(template) is not None
    ctx = context("O'Brien & <b>Zoë</b>")
    fast = renderer.render(template, "Hi", ctx, brand="Crumb").html
    assert "<style" not in fast and 'style="' in fast
    assert "<b>Zoë</b>" not in fast  # autoescaped as the .html file would be
    assert same_page(fast, per_email(renderer, template, ctx))


def write(folder: Path, name: str, source: str) -> None:
    path = folder / f"{name}.html"
    path.write_text(source)
    stamp = path.stat().st_mtime + 5  # a change Jinja's auto-reload can see at once
    os.utime(path, (stamp, stamp))


LAYOUT = """<html><head><style>p { color: #123456; } td p { margin: 0; }</style></head>
<body><table><tr><td>{{ content }}</td></tr></table>
<a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</body></html>"""


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "email"
    folder.mkdir()
    write(folder, "_layout", LAYOUT)
    (folder / "_layout.txt").write_text(
        "{{ content }}\n{{ unsubscribe_url }}\n{{ postal_address }}\n"
    )
    return folder


UNSAFE = {
    # HTML moves stray text out of a table: pre-inlining would break the loop.
    "loop in a table": (
        "<table>{% for t in ['a', 'b'] %}<tr><td><p>{{ t }}</p></td></tr>{% endfor %}</table>",
        '<tr><td><p style="color: #123456;margin: 0;">b</p></td></tr>',
    ),
    # Jinja where an attribute name goes would come back as an attribute of its own.
    "attribute": (
        '<p {% if subscriber.first_name %}class="named"{% endif %}>Hi {{ subscriber.first_name }}</p>',
        '<p class="named" style="color: #123456;margin: 0;">Hi Ana</p>',
    ),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_what_cannot_be_preinlined_is_inlined_per_email(templates, case):
    source, expected = UNSAFE[case]
    write(templates, "step", source)
    renderer = Renderer(templates)
    assert renderer._preinlined("step") is None
    assert expected in renderer.render("step", "Hi", context("Ana")).html


def test_an_edited_template_is_inlined_again(templates):
    write(templates, "note", "<p>first {{ subscriber.first_name }}</p>")
    renderer = Renderer(templates)
    assert ">first Ana</p>" in renderer.render("note", "Hi", context("Ana")).html
    write(templates, "note", "<p>second {{ subscriber.first_name }}</p>")
    html = renderer.render("note", "Hi", context("Ana")).html
    assert '<p style="color: #123456;margin: 0;">second Ana</p>' in html
    assert same_page(html, inliner().inline(html))
