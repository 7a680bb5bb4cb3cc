"""Custom fields: what a workspace declares in `nurture.toml`, and how values are checked.

    signup_fields = ["company"]     # what the public form / JSON signup may set
    [fields]
    company = "text"                # text | number | date | bool
    employees = "number"

Values are stored in `subscribers.attributes` in one canonical text form per type
(numbers without a trailing `.0`, dates as YYYY-MM-DD, bools as `true`/`false`), so a
segment term `attr:employees=50` matches exactly what an import or a form stored.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from nurture.errors import ConfigError, SubscriberError

#: Longest text value, in characters; longer input is refused, not cut.
TEXT_MAX = 200
TYPES = ("text", "number", "date", "bool")
#: Field names: what a template can write as `subscriber.attributes.NAME`.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Columns every subscriber has; an import or a form reads them as such, never as fields.
BUILTIN = frozenset({"email", "first_name", "timezone", "tags"})
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def clean_text(value: str, limit: int | None = None) -> str:
    """One line of free text: control characters (NUL, ESC, BEL, DEL, U+2028…) dropped and
    runs of whitespace made one space. Every path that stores a name or a text field calls
    this, so nothing that reaches a Subject header or PostgreSQL can carry them."""
    if value.isprintable():  # no control, separator or non-space whitespace: the usual case
        kept = value
    else:
        kept = "".join(" " if c.isspace() else c for c in value if not _is_control(c))
    text = " ".join(kept.split())
    return text[:limit] if limit is not None else text


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") and not c.isspace()


@dataclass(frozen=True)
class Fields:
    """The workspace's declared fields: name → type, and those a signup may set."""

    types: dict[str, str] = field(default_factory=dict)
    signup: tuple[str, ...] = ()

    def declared(self) -> str:
        return ", ".join(sorted(self.types)) or "none"

    def check_name(self, name: str) -> str:
        if name not in self.types:
            raise SubscriberError(
                f"unknown field {name[:40]!r}: declared fields are {self.declared()} "
                "(declare more in nurture.toml under [fields])"
            )
        return name

    def convert(self, name: str, raw: Any) -> str | None:
        """The canonical stored form of one value; None for an empty value (unset)."""
        return self.converter(name)(raw)

    def converter(self, name: str) -> Callable[[Any], str | None]:
        """`convert` for one field with its lookups done once: a bulk import converts a
        whole column of values."""
        kind = self.types[self.check_name(name)]
        to, hint = _CONVERT[kind], _HINT[kind]

        def convert(raw: Any) -> str | None:
            if raw is None:
                return None
            # text cleans and tells empty itself; the other types are given non-empty text
            if kind != "text" and isinstance(raw, str) and not clean_text(raw):
                return None
            try:
                return to(raw)
            except (ValueError, TypeError, OverflowError):
                shown = str(raw)[:40]
                raise SubscriberError(f"{name}: {shown!r} is not a {kind}{hint}") from None

        return convert

    def values(self, pairs: Mapping[str, Any]) -> dict[str, str | None]:
        """Every pair checked and converted; the first bad one raises SubscriberError."""
        return {name: self.convert(name, raw) for name, raw in pairs.items()}


def _text(raw: Any) -> str | None:
    if not isinstance(raw, str):
        raise TypeError
    text = clean_text(raw)
    if len(text) > TEXT_MAX:
        raise ValueError
    return text or None


def _number(raw: Any) -> str:
    if isinstance(raw, bool):
        raise TypeError
    value = float(raw.strip() if isinstance(raw, str) else raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _date(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError
    return date.fromisoformat(raw.strip()).isoformat()


def _bool(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    word = str(raw).strip().lower()
    if word in _TRUE:
        return "true"
    if word in _FALSE:
        return "false"
    raise ValueError


_CONVERT = {"text": _text, "number": _number, "date": _date, "bool": _bool}
_HINT = {
    "text": f" (at most {TEXT_MAX} characters)",
    "number": " (like 42 or 3.5)",
    "date": " (like 2026-05-31)",
    "bool": " (true or false)",
}


def parse_pairs(items: Iterable[str]) -> dict[str, str]:
    """`K=V` arguments from the command line, in order; SubscriberError on one without '='."""
    pairs: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise SubscriberError(f"{item[:60]!r} is not NAME=VALUE (like plan=pro)")
        pairs[name.strip().lower()] = value
    return pairs


_cache: dict[Path, tuple[float, Fields]] = {}
T = TypeVar("T")


def fields_for(workspace: Path) -> Fields:
    """The workspace's fields, read again only when nurture.toml changed."""
    return read_when_changed(workspace / "nurture.toml", _cache, _load)


def read_when_changed(
    path: Path, cache: dict[Path, tuple[float, T]], load: Callable[[Path], T]
) -> T:
    """What `load` makes of `path`, kept in `cache` until the file changes (or appears)."""
    stamp = path.stat().st_mtime if path.exists() else 0.0
    cached = cache.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    value = load(path)
    cache[path] = (stamp, value)
    return value


def _load(path: Path) -> Fields:
    if not path.exists():
        return Fields()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    table = data.get("fields", {})
    if not isinstance(table, dict):
        raise ConfigError(f'{path}: [fields] must be a table of name = "text" and the like')
    types: dict[str, str] = {}
    for name, kind in table.items():
        if not NAME.match(name) or name in BUILTIN or hasattr(dict, name):
            raise ConfigError(f"{path}: [fields] {name!r} is not a field name: use a-z, 0-9 "
                              "and _, starting with a letter, not email/first_name/timezone/tags "
                              "nor a name templates already use (items, keys, values, get…)")  # fmt: skip
        if kind not in TYPES:
            raise ConfigError(f"{path}: [fields] {name} = {kind!r}: a type is one of "
                              f"{', '.join(TYPES)}")  # fmt: skip
        types[name] = kind
    signup = data.get("signup_fields", [])
    if not isinstance(signup, list) or not all(isinstance(s, str) for s in signup):
        raise ConfigError(f"{path}: signup_fields must be a list of field names")
    undeclared = [s for s in signup if s not in types]
    if undeclared:
        raise ConfigError(f"{path}: signup_fields names {undeclared[0]!r}, which [fields] does "
                          f"not declare (declared: {', '.join(sorted(types)) or 'none'})")  # fmt: skip
    return Fields(types=types, signup=tuple(signup))
