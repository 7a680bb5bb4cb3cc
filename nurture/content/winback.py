"""The win-back sequence a `[sunset]` policy names (nurture.sunsetpolicy): it must exist,
and only the policy may start it (`trigger: manual`), or new subscribers would get
"we miss you" on their first day."""

from __future__ import annotations

import difflib

from nurture.content.sequences import Catalog, Sequence
from nurture.errors import ConfigError, SequenceError
from nurture.sunsetpolicy import SunsetPolicy

TOML = "nurture.toml"


def winback_problems(policy: SunsetPolicy | None, catalog: Catalog) -> list[SequenceError]:
    """What is wrong with the policy's win-back sequence, at `path:line` (for `validate`)."""
    if policy is None or policy.winback is None:
        return []
    seq = catalog.get(policy.winback)
    if seq is None:
        close = difflib.get_close_matches(policy.winback, list(catalog.sequences), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [SequenceError(TOML, policy.line_of("winback"),
                              f"[sunset] winback names sequence '{policy.winback}', which does "
                              f"not exist{hint}")]  # fmt: skip
    if seq.trigger != "manual":
        return [SequenceError(seq.path, seq.line_of("trigger"),
                              f"trigger: {seq.trigger} would send the win-back to people who are "
                              "not inactive: the [sunset] policy starts it, so write "
                              "trigger: manual")]  # fmt: skip
    return []


def winback_sequence(policy: SunsetPolicy, catalog: Catalog) -> Sequence | None:
    """The sequence inactive subscribers are sent (None: the policy has none); ConfigError
    when it cannot be used, so nobody is unsubscribed without the win-back they were due."""
    problems = winback_problems(policy, catalog)
    if problems:
        raise ConfigError(f"{problems[0]} (nobody was sunset; see `nurture validate`)")
    return catalog.get(policy.winback) if policy.winback else None
