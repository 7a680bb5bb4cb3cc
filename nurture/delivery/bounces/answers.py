"""What a provider's webhook call is answered, once it has been verified."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from nurture.delivery.bounces.handling import Handled, Tally, handle_notice
from nurture.delivery.bounces.reading import Notice
from nurture.settings import Settings

#: How far a signed timestamp may be from now (Mailgun's advice: reject older calls).
REPLAY_WINDOW = 300
IGNORED = "ignored: not a bounce or complaint"
#: Seconds since 1970 as a provider writes them: ASCII digits only (`"²".isdigit()` is
#: true) and few enough that `int()` never meets Python's limit on digits.
_SECONDS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    handled: Handled | None = None


def stale(provider: str, timestamp: str, now: datetime) -> Answer | None:
    """The answer to a signed timestamp that is no number of seconds (400) or is more
    than REPLAY_WINDOW away (401, a replay); None when it is fresh."""
    if not _SECONDS.fullmatch(timestamp):
        return Answer(400, f"the {provider} timestamp is not a number of seconds")
    if abs(now.timestamp() - int(timestamp)) > REPLAY_WINDOW:
        return Answer(401, f"the {provider} signature is too old (a replay?)")
    return None


def answer(settings: Settings, notices: list[Notice], replay: str | None = None) -> Answer:
    """Handle the notices of one verified call, each once, by the recipient's address
    when nothing else names the email. `replay` names a signed call for the 409 that
    answers it when every notice was handled before: sent again, it changes nothing.
    Without it (Postmark, which signs nothing and only resends what failed) a repeat is
    answered 200 "duplicate"."""
    if not notices:
        return Answer(200, IGNORED)
    tally = Tally()
    for notice in notices:
        handled = handle_notice(settings, notice, by_address=True)
        tally.add(handled)
    if replay is not None and set(tally.outcomes) == {"duplicate"}:
        return Answer(409, f"{replay} was handled before (a replay?)")
    return Answer(200, str(tally) if len(notices) > 1 else handled.outcome, handled)
