"""Segments: a small expression language over subscribers, compiled to SQLAlchemy.

    tag:customers and not tag:churned
    ready or (in:from-curious-to-customer and stage:sales)
    attr:plan=pro and signed_up_before:2026-06-01
    opened:30d and not step:welcome:clicked

Terms are joined with `and`, `or`, `not` and parentheses (`not` binds tightest, then
`and`, then `or`). Every term becomes a SQL expression built by SQLAlchemy, never a
string, so a value is always a bound parameter. Mistakes are reported with their
position and a hint, all in one `SegmentError`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select, true

from nurture import clock
from nurture.content.durations import parse_duration
from nurture.content.sequences import Catalog, catalog_for
from nurture.content.topics import BROADCAST_TOPIC, Topics, topics_for
from nurture.errors import NurtureError
from nurture.people.engaged import UnknownStep, engaged, inactive, resolve_step, step_engaged
from nurture.people.preferences import not_left, not_paused
from nurture.people.sunset import newsletters_stopped
from nurture.people.tags import tag_name
from nurture.settings import Settings
from nurture.store.tables import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus, Tag

#: Each term, with what it means, for errors and `--help`.
TERMS = {
    "tag": "tag:NAME            has this tag",
    "attr": "attr:KEY=VALUE      attribute KEY equals VALUE (attr:KEY: has any value)",
    "in": "in:SEQUENCE         is going through this sequence now",
    "completed": "completed:SEQUENCE  has finished this sequence",
    "stage": "stage:STAGE         is at a step of this stage (education, sales) in a sequence",
    "ready": "ready               has become sales-ready",
    "status": "status:STATUS       pending, active, unsubscribed, bounced",
    "signed_up_before": "signed_up_before:YYYY-MM-DD",
    "signed_up_after": "signed_up_after:YYYY-MM-DD  (on or after that day)",
    "topic": "topic:NAME          has not left this topic (nurture.toml [topics])",
    "opened": "opened:30d          opened (or clicked) an email in the last 30 days",
    "clicked": "clicked:90d         clicked a link in an email in the last 90 days",
    "inactive": "inactive:120d       no open or click for 120 days (or since signing up)",
    "step": "step:STEP:ACTION    was sent, opened or clicked step STEP (step:SEQ:STEP:ACTION)",
}
_BARE = {"ready"}  # terms without a value
_KEYWORDS = {"and", "or", "not"}
_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<word>(?:"[^"]*"?|[^\s()"])+))""")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: Deepest nesting of parentheses and `not`s: the parser and SQL compilers recurse.
MAX_DEPTH = 32
#: Most terms in one segment: SQLite refuses expressions deeper than 1,000.
MAX_TERMS = 200
_SHOWN = 70  # characters of the segment an error quotes


class SegmentError(NurtureError):
    """A segment that does not parse or names something unknown; says where and why."""

    def __init__(self, text: str, position: int, message: str, hint: str = ""):
        self.text, self.position, self.hint = text, position, hint
        start = max(0, min(position - _SHOWN // 2, len(text) - _SHOWN))
        # a long segment is shown around the mistake only
        shown = ("…" if start else "") + text[start : start + _SHOWN]
        shown += "…" if start + _SHOWN < len(text) else ""
        caret = " " * (position - start + (1 if start else 0)) + "^"
        detail = f" ({hint})" if hint else ""
        super().__init__(
            f"segment: {message} at position {position + 1}{detail}\n  {shown}\n  {caret}"
        )


# -- syntax tree ---------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    name: str
    value: str | None
    position: int


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class AllOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Node, ...]


Node = Term | Not | AllOf | AnyOf


# -- parsing -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "word", "end"
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing white space is left
            break
        kind = match.group("paren") or "word"
        tokens.append(_Token(kind, match.group(kind if kind == "word" else "paren"),
                             match.start(kind if kind == "word" else "paren")))  # fmt: skip
        pos = match.end()
    tokens.append(_Token("end", "", len(text.rstrip())))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, self.i, self.depth, self.terms = text, _tokens(text), 0, 0, 0

    def fail(self, token: _Token, message: str, hint: str = "") -> SegmentError:
        return SegmentError(self.text, token.position, message, hint)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text.lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.fail(self.peek(), "the segment is empty",
                            "write a term such as tag:customers, or leave --segment out")  # fmt: skip
        node = self.any_of()
        token = self.peek()
        if token.kind == ")":
            raise self.fail(token, "')' without a matching '('")
        if token.kind != "end":
            raise self.fail(token, f"unexpected {token.text!r}",
                            "join terms with 'and' or 'or'")  # fmt: skip
        return node

    def any_of(self) -> Node:
        items = [self.all_of()]
        while self.keyword("or"):
            items.append(self.all_of())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def all_of(self) -> Node:
        items = [self.negated()]
        while self.keyword("and"):
            items.append(self.negated())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(token, f"more than {MAX_DEPTH} levels of parentheses and 'not'",
                            "write the segment more simply")  # fmt: skip

    def negated(self) -> Node:
        token = self.peek()
        if self.keyword("not"):
            self.nest(token)
            node: Node = Not(self.negated())
            self.depth -= 1
            return node
        if token.kind == "(":
            self.nest(token)
            self.i += 1
            node = self.any_of()
            if self.peek().kind != ")":
                raise self.fail(self.peek(), "missing ')'",
                                f"to close the '(' at position {token.position + 1}")  # fmt: skip
            self.i += 1
            self.depth -= 1
            return node
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            shown = "the end" if token.kind == "end" else repr(token.text)
            raise self.fail(token, f"expected a term but found {shown}",
                            "terms look like tag:customers, ready or attr:plan=pro")  # fmt: skip
        self.i += 1
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.fail(token, f"more than {MAX_TERMS} terms",
                            "use a tag for a large group of subscribers")  # fmt: skip
        return self.term(token)

    def term(self, token: _Token) -> Term:
        name, colon, value = token.text.partition(":")
        name = name.lower()
        if name not in TERMS:
            close = difflib.get_close_matches(name, TERMS, 1)
            hint = f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(TERMS)
            raise self.fail(token, f"unknown term {name!r}", hint)
        if value.count('"') % 2:
            raise self.fail(token, "a quote is not closed", 'like tag:"big spender"')
        if name != "attr":  # attr:KEY="VALUE" is unquoted after the split
            value = _unquote(value)
        if name in _BARE:
            if colon:
                raise self.fail(token, f"'{name}' takes no value", f"write just '{name}'")
            return Term(name, None, token.position)
        if not value:
            raise self.fail(token, f"'{name}' needs a value", f"like {TERMS[name].split()[0]}")
        return Term(name, value, token.position)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def parse(text: str) -> Node:
    """The syntax tree of a segment expression; SegmentError when it does not parse."""
    return _Parser(text).parse()


# -- compiling -----------------------------------------------------------------------
@dataclass(frozen=True)
class Compiler:
    """Turns a syntax tree into a WHERE clause on `Subscriber`; names are checked here,
    against the sequences and statuses that exist."""

    text: str
    catalog: Catalog
    timezone: str
    topics: Topics = field(default_factory=Topics)

    def fail(self, term: Term, message: str, hint: str = "") -> SegmentError:
        return SegmentError(self.text, term.position, message, hint)

    def compile(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Not):
            return not_(self.compile(node.item))
        if isinstance(node, AllOf):
            return and_(*(self.compile(n) for n in node.items))
        if isinstance(node, AnyOf):
            return or_(*(self.compile(n) for n in node.items))
        return getattr(self, f"_{node.name}")(node)

    def _tag(self, term: Term) -> ColumnElement[bool]:
        name = tag_name(term.value or "")
        return exists(select(Tag.id).where(Tag.subscriber_id == Subscriber.id, Tag.name == name))

    def _attr(self, term: Term) -> ColumnElement[bool]:
        key, eq, value = (term.value or "").partition("=")
        if not _NAME.match(key):
            raise self.fail(term, f"{key!r} is not an attribute name", "like attr:plan=pro")
        field = Subscriber.attributes[key].as_string()
        return field == _unquote(value) if eq else and_(field.is_not(None), field != "")

    def _sequence(self, term: Term) -> str:
        name = term.value or ""
        if self.catalog.get(name) is None:
            known = ", ".join(self.catalog.sequences) or "none"
            raise self.fail(term, f"no sequence named {name!r}", f"known: {known}")
        return name

    def _enrolled(self, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists(select(Enrollment.id).where(Enrollment.subscriber_id == Subscriber.id,
                                                  *where))  # fmt: skip

    def _in(self, term: Term) -> ColumnElement[bool]:
        return self._enrolled(Enrollment.sequence == self._sequence(term),
                              Enrollment.status == EnrollmentStatus.ACTIVE)  # fmt: skip

    def _completed(self, term: Term) -> ColumnElement[bool]:
        return self._enrolled(Enrollment.sequence == self._sequence(term),
                              Enrollment.status == EnrollmentStatus.COMPLETED)  # fmt: skip

    def _stage(self, term: Term) -> ColumnElement[bool]:
        stage = (term.value or "").lower()
        every = [(seq.name, step) for seq in self.catalog.sequences.values() for step in seq.steps]
        steps = [(name, step.id) for name, step in every if str(step.stage) == stage]
        if not steps:
            stages = sorted({str(step.stage) for _, step in every})
            raise self.fail(term, f"no step has stage {stage!r}", "known: " + ", ".join(stages))
        at_step = or_(*(and_(Enrollment.sequence == q, Enrollment.next_step_id == s)
                        for q, s in steps))  # fmt: skip
        return self._enrolled(Enrollment.status == EnrollmentStatus.ACTIVE, at_step)

    def _ready(self, term: Term) -> ColumnElement[bool]:
        return Subscriber.ready_at.is_not(None)

    def _status(self, term: Term) -> ColumnElement[bool]:
        status = (term.value or "").lower()
        if status not in set(SubscriberStatus) - {SubscriberStatus.FORGOTTEN}:
            raise self.fail(term, f"unknown status {status!r}",
                            "known: pending, active, unsubscribed, bounced")  # fmt: skip
        return Subscriber.status == status

    def _day(self, term: Term) -> datetime:
        try:
            day = date.fromisoformat(term.value or "")
        except ValueError:
            raise self.fail(term, f"{term.value!r} is not a date", "write YYYY-MM-DD") from None
        return datetime.combine(day, datetime.min.time(), ZoneInfo(self.timezone))

    def _signed_up_before(self, term: Term) -> ColumnElement[bool]:
        return Subscriber.created_at < self._day(term)

    def _signed_up_after(self, term: Term) -> ColumnElement[bool]:
        return Subscriber.created_at >= self._day(term)

    def _topic(self, term: Term) -> ColumnElement[bool]:
        why = self.topics.unknown_parts(term.value or "")
        if why:
            raise self.fail(term, *why)
        return not_left(term.value or "")

    def _since(self, term: Term) -> datetime:
        """`now` less the term's duration (opened:30d): engagement terms look back."""
        try:
            return clock.now() - parse_duration(term.value or "")
        except ValueError as e:
            raise self.fail(term, str(e).split(":")[0], f"like {term.name}:30d") from None

    def _opened(self, term: Term) -> ColumnElement[bool]:
        return engaged(Subscriber.id, self._since(term))

    def _clicked(self, term: Term) -> ColumnElement[bool]:
        return engaged(Subscriber.id, self._since(term), ("click",))

    def _inactive(self, term: Term) -> ColumnElement[bool]:
        return inactive(self._since(term))

    def _step(self, term: Term) -> ColumnElement[bool]:
        try:
            return step_engaged(*resolve_step(self.catalog, term.value or ""))
        except UnknownStep as e:
            raise self.fail(term, e.message, e.hint) from None


def compile_segment(
    text: str | None, catalog: Catalog, timezone: str, topics: Topics | None = None
) -> ColumnElement[bool]:
    """The WHERE clause of a segment (days are midnight in `timezone`); no segment: true."""
    if text is None or not text.strip():
        return true()
    return Compiler(text, catalog, timezone, topics or Topics()).compile(parse(text))


def issue_topic(issue: Any) -> str:
    """The topic of a broadcast row, or of an issue not yet saved."""
    return str(issue.topic or BROADCAST_TOPIC)


def audience_clause(
    settings: Settings, segment: str | None, *, topic: str | None = None,
    now: datetime | None = None,
) -> ColumnElement[bool]:  # fmt: skip
    """Active subscribers in `segment` (every active one without a segment), and with a
    `topic`, those who have not left it, and at `now`, those not pausing; less those the
    sunset policy stopped newsletters to. Suppressed addresses are left out separately:
    they are stored as hashes SQL cannot compare."""
    catalog = catalog_for(settings.sequences_dir)
    clause = and_(Subscriber.status == SubscriberStatus.ACTIVE,
                  compile_segment(segment, catalog, settings.timezone,
                                  topics_for(settings.workspace)))  # fmt: skip
    if topic is not None:
        clause = and_(clause, not_left(topic))
    if settings.sunset is not None:  # while a policy stands, whom it stopped gets none
        clause = and_(clause, ~newsletters_stopped())
    return clause if now is None else and_(clause, not_paused(now))
