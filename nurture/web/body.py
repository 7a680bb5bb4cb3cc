"""JSON request bodies read strictly: one clear reason for anything we would not store.

Flask's own reader lets through what later breaks: `NaN` and `1e400` (infinity) are
not JSON and fail when stored, and a body of a few thousand `[` raises RecursionError
instead of ValueError, a 500. Here each is a BadBody, which views answer with a 400.
"""

from __future__ import annotations

import json
import math
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


def _depth(value: Any) -> int:
    """How deeply `value` nests, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse(raw: bytes | str) -> Any:
    """The value of a JSON text, or BadBody."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadBody(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except BadBody:
        raise
    except ValueError as e:  # JSONDecodeError, bad UTF-8, an integer of 4,300+ digits
        raise BadBody(f"the body is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    if _depth(value) > MAX_DEPTH:
        raise BadBody(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def json_object(example: str) -> dict[str, Any]:
    """The request's JSON object, or BadBody naming what to send instead."""
    value = parse(request.get_data(cache=True))
    if not isinstance(value, dict):
        raise BadBody(f"send a JSON object, like {example}")
    return value
