"""Durations, for content's own modules: the parser lives in the base (`nurture.durations`)
because settings read durations too (`[sunset]` in nurture.toml)."""

from nurture.durations import LONGEST, format_duration, parse_duration

__all__ = ["LONGEST", "format_duration", "parse_duration"]
