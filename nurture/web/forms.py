"""The signup form's input: read from a form or JSON, checked field by field.

Every problem is reported against its field, so the page can show it next to the
input and a JSON caller gets a map of them; nothing is stored unless all is well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nurture.content.fields import Fields
from nurture.content.sequences import Catalog
from nurture.errors import SubscriberError
from nurture.people.subscribers import (
    UnmailableAddress,
    check_timezone,
    clean_first_name,
    normalize_email,
)
from nurture.people.tags import TAG, tag_name

FIELDS = ("email", "first_name", "timezone", "sequence", "tags")
#: A field people never see; bots that fill every input fill this one too.
HONEYPOT = "website"
MAX_TAGS = 20
#: Longest value read from any field; longer input is refused, not silently cut.
MAX_FIELD = 1000


@dataclass
class Signup:
    email: str = ""
    first_name: str | None = None
    timezone: str | None = None
    sequence: str | None = None
    tags: list[str] = field(default_factory=list)
    #: Values of the workspace's `signup_fields`, checked and converted.
    attributes: dict[str, str] = field(default_factory=dict)
    #: The topics ticked, of those the form offers (`signup_topics`); None: no choice.
    topics: list[str] | None = None
    #: What was typed, to show the form again with the errors.
    raw: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    spam: bool = False


def _text(data: Mapping[str, Any], name: str, signup: Signup) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        signup.errors[name] = f"{name} must be text"
        return ""
    if len(value) > MAX_FIELD:
        signup.errors[name] = f"{name} is too long"
        return ""
    value = value.strip()
    signup.raw[name] = value
    return value


def _tags(data: Mapping[str, Any], signup: Signup, allowed: frozenset[str]) -> list[str]:
    value = data.get("tags")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = value.replace(",", " ").split()
        signup.raw["tags"] = value[:MAX_FIELD]
    elif isinstance(value, list) and all(isinstance(t, str) for t in value):
        items = list(value)
    else:
        signup.errors["tags"] = "tags must be text or a list of text"
        return []
    tags = [tag_name(t) for t in items if t.strip()]
    bad = [t for t in tags if not TAG.match(t)]
    if bad:
        signup.errors["tags"] = f"{bad[0][:70]!r} is not a tag: use letters, digits, '-' and '_'"
    elif len(tags) > MAX_TAGS:
        signup.errors["tags"] = f"at most {MAX_TAGS} tags"
    elif refused := sorted(set(tags) - allowed):
        signup.errors["tags"] = _refusal(refused[0], allowed)
    return tags


def _topics(data: Mapping[str, Any], signup: Signup, offered: tuple[str, ...]) -> None:
    """The topics chosen. A form that offers topics always sends `topics` (a hidden empty
    one besides the checkboxes), so ticking none is a choice too, and refused."""
    value = data.get("topics")
    if value is None:
        return
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        signup.errors["topics"] = "topics must be a list of topic names"
        return
    chosen = list(dict.fromkeys(t.strip().lower() for t in value if t.strip()))
    refused = [t for t in chosen if t not in offered]
    if not offered:
        signup.errors["topics"] = ("this form cannot choose topics (list those it may offer "
                                   "in signup_topics in nurture.toml)")  # fmt: skip
    elif refused:
        signup.errors["topics"] = (f"this form does not offer the topic {refused[0][:40]!r}: "
                                   f"it offers {', '.join(offered)}")  # fmt: skip
    elif not chosen:
        signup.errors["topics"] = "Choose at least one topic."
    signup.topics = chosen


def _refusal(tag: str, allowed: frozenset[str]) -> str:
    if not allowed:
        return f"this form cannot set tags ({tag!r} was sent)"
    return f"this form cannot set the tag {tag!r}: it may set {', '.join(sorted(allowed))}"


def _unknown_field(name: str, takes: tuple[str, ...], fields: Fields) -> str:
    """A field the signup may not set; a declared one is named as such, since the fix is
    in nurture.toml, not in the form."""
    if name in fields.types:
        return (f"field {name!r} is declared but a signup may not set it: add it to "
                f"signup_fields in nurture.toml (a signup takes {', '.join(takes)})")  # fmt: skip
    return f"unknown field {name[:40]!r}: a signup takes {', '.join(takes)}"


def parse_signup(
    data: Mapping[str, Any], catalog: Callable[[], Catalog],
    allowed_tags: frozenset[str] = frozenset(), fields: Fields | None = None,
    offered: tuple[str, ...] = (),
) -> Signup:  # fmt: skip
    """`catalog` is asked for the workspace's sequences only when the form names one: a
    look at the sequence files on every signup would cost more than checking the rest.
    Tags outside `allowed_tags` (NURTURE_SIGNUP_TAGS) are refused, not dropped: the
    page that sends them is wrong and its author should hear so. Of the declared
    `fields`, a signup may set only `signup_fields`; of the topics, only the `offered`
    ones (`signup_topics`) may be chosen."""
    signup = Signup()
    fields = fields or Fields()
    takes = (*FIELDS, *(("topics",) if offered else ()), *fields.signup)
    # `topics` where none are offered gets a sentence of its own (_topics)
    unknown = sorted(k for k in data if k not in takes and k not in (HONEYPOT, "topics"))
    if unknown:
        signup.errors["form"] = _unknown_field(unknown[0], takes, fields)
    for name in fields.signup:
        value = data.get(name)
        if isinstance(value, str):
            signup.raw[name] = value[:MAX_FIELD]
        try:
            converted = fields.convert(name, value)
        except SubscriberError as e:
            signup.errors[name] = str(e)
            continue
        if converted is not None:
            signup.attributes[name] = converted
    if _text(data, HONEYPOT, signup):
        signup.spam = True

    email = _text(data, "email", signup)
    if not email:
        signup.errors.setdefault("email", "Enter your email address.")
    else:
        try:
            signup.email = normalize_email(email)
        except UnmailableAddress as e:
            signup.errors["email"] = e.VISITOR_MESSAGE
        except SubscriberError as e:
            detail = str(e).split(": ", 1)[-1]  # without the address, which the form shows
            signup.errors["email"] = f"Enter a valid email address, like name@example.com. {detail}"

    signup.first_name = clean_first_name(_text(data, "first_name", signup))

    tz = _text(data, "timezone", signup)
    try:
        signup.timezone = check_timezone(tz)
    except SubscriberError as e:
        signup.errors["timezone"] = str(e)

    sequence = _text(data, "sequence", signup)
    if sequence and catalog().get(sequence) is None:
        signup.errors["sequence"] = f"there is no sequence named {sequence[:100]!r}"
    signup.sequence = sequence or None

    signup.tags = _tags(data, signup, allowed_tags)
    _topics(data, signup, offered)
    return signup
