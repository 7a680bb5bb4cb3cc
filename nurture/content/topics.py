"""Topics: what a reader can choose to get, declared in `nurture.toml`.

    signup_topics = ["newsletter", "tips"]   # what the signup form offers (optional)
    [topics]
    newsletter = "The monthly newsletter"    # name = "Label readers see"
    tips = "Baking tips"

A sequence belongs to the topic its `topic:` names, else to the topic named after the
sequence itself; a broadcast to the topic its `--topic` or front matter names, else to
`newsletter`. A reader is in every topic until they leave it (on the preference
centre, or by leaving the topics a signup form offered them unticked).

Without a `[topics]` table topics are off: the unsubscribe page, the `List-Id` header
and signups stay as they were, and `topic:` anywhere is a `validate` error. Problems
of the table are `validate` errors at their line; the rest of the table still works.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from nurture.content.fields import clean_text, read_when_changed
from nurture.content.sequences import Catalog, Sequence
from nurture.content.yamlmarks import load_with_lines
from nurture.errors import SequenceError
from nurture.settings import TOML_TABLES, Settings

#: The topic a broadcast belongs to when it names none.
BROADCAST_TOPIC = "newsletter"
#: Topic names: what a `List-Id`, a segment term and a form value carry.
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: Longest label a reader sees, in characters.
LABEL_MAX = 100
TOML = "nurture.toml"
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")
#: Names of settings: one written after `[topics]` by mistake is no topic.
_SETTINGS = frozenset({f.name for f in fields(Settings)} | {"from", *TOML_TABLES})
#: Where a problem of nurture.toml is reported: (the key's path, the message).
ProblemSink = Callable[[tuple[str, ...], str], None]


@dataclass(frozen=True)
class Topics:
    """The workspace's topics: name → label in file order, those a signup offers, and
    the problems `validate` reports (entries with a problem are left out)."""

    labels: dict[str, str] = field(default_factory=dict)
    signup: tuple[str, ...] = ()
    problems: tuple[SequenceError, ...] = ()

    @property
    def on(self) -> bool:
        """Topics are on when `[topics]` declares at least one."""
        return bool(self.labels)

    def label(self, name: str) -> str:
        """What a reader sees for a topic: its label, else its name made readable."""
        return self.labels.get(name) or name.replace("-", " ").replace("_", " ").capitalize()

    def unknown(self, name: str) -> str | None:
        """Why `name` is no declared topic (one sentence with a hint), or None."""
        found = self.unknown_parts(name)
        return None if found is None else f"{found[0]} ({found[1]})"

    def unknown_parts(self, name: str) -> tuple[str, str] | None:
        """`unknown` as (what is wrong, the hint), for a caller that shows them apart."""
        if name in self.labels:
            return None
        if not self.on:
            return (f"topic {name!r}, but nurture.toml declares no topics",
                    f'add a [topics] table, e.g. {_example(name)} = "Label readers see"')  # fmt: skip
        close = difflib.get_close_matches(name, list(self.labels), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"declared: {', '.join(self.labels)}"
        return f"unknown topic {name!r}", hint


def _example(name: str) -> str:
    return name if NAME.match(name) else "tips"


def topic_of(seq: Sequence) -> str:
    """The topic a sequence's emails belong to."""
    return seq.topic or seq.name


_cache: dict[Path, tuple[float, Topics]] = {}


def topics_for(workspace: Path) -> Topics:
    """The workspace's topics, read again only when nurture.toml changed."""
    return read_when_changed(workspace / TOML, _cache, _load)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """{(table, key) or (key,) or (table,): 1-based line} of a TOML text as written, for
    problems found in what tomllib read (it keeps no lines)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for n, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(table, n)
            continue
        key = _KEY.match(line)
        if key:
            raw = key.group(1)
            parts = (raw[1:-1],) if raw[0] in "\"'" else tuple(raw.split("."))
            lines.setdefault((*table, *parts), n)
    return lines


def _load(path: Path) -> Topics:
    if not path.exists():
        return Topics()
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return Topics()  # the settings refuse such a file, with its own message
    lines = key_lines(text)
    problems: list[SequenceError] = []

    def problem(key: tuple[str, ...], message: str) -> None:
        problems.append(SequenceError(TOML, lines.get(key) or lines.get(key[:1]), message))

    labels = _labels(data.get("topics"), problem)
    signup = data.get("signup_topics", [])
    if not isinstance(signup, list) or not all(isinstance(s, str) for s in signup):
        problem(("signup_topics",), 'signup_topics must be a list of topic names, like ["tips"]')
        signup = []
    for name in signup:
        why = Topics(labels).unknown(name)
        if why:
            problem(("signup_topics",), f"signup_topics: {why}")
    offered = tuple(dict.fromkeys(s for s in signup if s in labels))
    return Topics(labels, offered, tuple(problems))


def _labels(table: object, problem: ProblemSink) -> dict[str, str]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        problem(("topics",), '[topics] must be a table of name = "Label readers see"')
        return {}
    labels: dict[str, str] = {}
    for name, raw in table.items():
        key = ("topics", name)
        label = clean_text(raw) if isinstance(raw, str) else ""
        if not NAME.match(name):
            close = name.lower().replace(" ", "-")
            hint = f" (did you mean '{close}'?)" if NAME.match(close) else ""
            problem(key, f"[topics] {name!r} is not a topic name: use lower-case letters, "
                    f"digits, '-' and '_', starting with a letter{hint}")  # fmt: skip
        elif name in _SETTINGS:
            problem(key, f"[topics] {name} is a setting, not a topic: settings go before the "
                    "first [table] of nurture.toml")  # fmt: skip
        elif not isinstance(raw, str):
            problem(key, f'[topics] {name}: the label must be text in quotes, like {name} = '
                    '"Baking tips"')  # fmt: skip
        elif not label:
            problem(key, f"[topics] {name}: the label is empty: write what readers see on the "
                    "preference centre")  # fmt: skip
        elif len(label) > LABEL_MAX:
            problem(key, f"[topics] {name}: the label is longer than {LABEL_MAX} characters")
        else:
            labels[name] = label
    return labels


def topic_problems(workspace: Path, catalog: Catalog) -> list[SequenceError]:
    """Every topic problem of a workspace, for `validate`: the table's own, a sequence
    or a newsletter issue naming a topic nobody declared, and (topics on) a sequence
    whose default topic, its own name, is not declared either."""
    topics = topics_for(workspace)
    problems = list(topics.problems)
    for seq in catalog.sequences.values():
        if seq.topic is not None:
            why = topics.unknown(seq.topic)
            if why:
                problems.append(SequenceError(seq.path, seq.line_of("topic"), f"topic: {why}"))
        elif topics.on and seq.name not in topics.labels:
            problems.append(SequenceError(seq.path, seq.line_of("name"), (
                f"sequence '{seq.name}' belongs to the topic of its own name, which [topics] "
                f"does not declare: add `topic:` naming one of {', '.join(topics.labels)}, "
                f"or declare {seq.name} in [topics]")))  # fmt: skip
    for shown, topic, line in _issue_topics(workspace):
        why = topics.unknown(topic) if isinstance(topic, str) else "must be a topic name"
        if why:
            problems.append(SequenceError(shown, line, f"topic: {why}"))
    return problems


def _issue_topics(workspace: Path) -> Iterator[tuple[str, object, int]]:
    """(path, topic, line) of each newsletters/*.md front matter that names a topic.
    A front matter that does not parse is `broadcast send`'s to report."""
    for path in sorted((workspace / "newsletters").glob("*.md")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "...")),
                   None) if lines and lines[0].strip() == "---" else None  # fmt: skip
        try:
            data, marks = load_with_lines("\n".join(lines[1:end])) if end else (None, {})
        except Exception:  # noqa: BLE001, S112 - reported by `broadcast send`
            continue
        if isinstance(data, dict) and data.get("topic") is not None:
            shown = str(path.relative_to(workspace))
            yield shown, data["topic"], marks.get(("topic",), 1) + 1
