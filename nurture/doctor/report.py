"""What one check found: pass, warn or fail, and the fix when it is not a pass."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    PASS = "pass"  # noqa: S105 - a check's outcome, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def passed(name: str, detail: str) -> Check:
    return Check(name, Level.PASS, detail)


def warned(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.WARN, detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Level.FAIL, detail, fix)
