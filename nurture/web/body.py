"""JSON request bodies read strictly: one clear reason for anything we would not store.

Flask's own reader lets through what later breaks: `NaN` and `1e400` (infinity) are
not JSON and fail when stored, and a body of a few thousand `[` raises RecursionError
instead of ValueError, a 500; a lone surrogate is no text, and a NUL cannot be
stored as sent. Here each is a BadBody, which views answer with a 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request

#: Deepest nesting a body may have; a signup or an event needs two or three levels.
MAX_DEPTH = 16


class BadBody(ValueError):
    """The request's JSON is not something we take; the message says why, in a line."""


def _no_constant(name: str) -> Any:
    raise BadBody(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadBody(f"the number {text[:40]} is too large")
    return value


#: A lone UTF-16 surrogate (`"\\ud800"`) is no character at all: it cannot be encoded.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Also NUL, which PostgreSQL refuses in text and JSON: data stored as sent must not
#: hold it (a form's fields are cleaned of it instead, content.fields.clean_text).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check(value: Any, unstorable: re.Pattern[str]) -> None:
    """BadBody when `value` nests deeper than MAX_DEPTH or holds text `unstorable`
    matches; walked without recursion."""
    todo = [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, str):
            bad = unstorable.search(item)
            if bad:
                what = "a NUL character" if bad[0] == "\x00" else "a lone surrogate"
                raise BadBody(f"the JSON holds {what} (\\u{ord(bad[0]):04x}), which cannot "
                              "be stored: leave it out")  # fmt: skip
        elif isinstance(item, dict | list):
            if level > MAX_DEPTH:
                raise BadBody(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)")
            if isinstance(item, dict):
                todo.extend((k, level) for k in item)
                todo.extend((v, level + 1) for v in item.values())
            else:
                todo.extend((v, level + 1) for v in item)


def parse(raw: bytes | str, *, stored_as_sent: bool = False) -> Any:
    """The value of a JSON text, or BadBody. `stored_as_sent`: the value is kept as it
    is (an event's data), so a NUL in it is refused too."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadBody(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except BadBody:
        raise
    except ValueError as e:  # JSONDecodeError, bad UTF-8, an integer of 4,300+ digits
        raise BadBody(f"the body is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    _check(value, _UNSTORABLE if stored_as_sent else _SURROGATE)
    return value


def json_object(example: str, *, stored_as_sent: bool = False) -> dict[str, Any]:
    """The request's JSON object, or BadBody naming what to send instead."""
    value = parse(request.get_data(cache=True), stored_as_sent=stored_as_sent)
    if not isinstance(value, dict):
        raise BadBody(f"send a JSON object, like {example}")
    return value
