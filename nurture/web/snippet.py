"""The copy-paste HTML form for other sites, rendered from the same template as our page."""

from __future__ import annotations

from pathlib import Path

import jinja2

from nurture.content.sequences import Catalog
from nurture.content.topics import topics_for
from nurture.errors import NurtureError
from nurture.people.subscribers import DEFAULT_WORDING
from nurture.settings import Settings
from nurture.web.common import brand
from nurture.web.forms import parse_signup

TEMPLATES = Path(__file__).parent / "templates"


def form_snippet(
    settings: Settings, catalog: Catalog, sequence: str | None = None, tags: tuple[str, ...] = ()
) -> str:
    checked = parse_signup({"email": "sam@example.com", "sequence": sequence or "",
                            "tags": " ".join(tags)}, lambda: catalog,
                           settings.signup_tags)  # fmt: skip
    if checked.errors:
        hint = (" (list the tags a form may set in signup_tags in nurture.toml, or "
                "NURTURE_SIGNUP_TAGS)" if "tags" in checked.errors else "")  # fmt: skip
        raise NurtureError("; ".join(checked.errors.values()) + hint)
    topics = topics_for(settings.workspace)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    return env.get_template("snippet.html").render(
        action=f"{settings.base_url}/subscribe",
        values={"sequence": sequence or "", "tags": " ".join(checked.tags)},
        wording=DEFAULT_WORDING,
        brand=brand(settings),
        topics=[(name, topics.label(name)) for name in topics.signup],
    )
