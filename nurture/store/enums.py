"""The states and kinds stored as strings, and the named groups of delivery states: one
place for the vocabulary every layer speaks (tables.py re-exports them)."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    FORGOTTEN = "forgotten"


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"  # unsubscribed, suppressed, bounced or reached the goal
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # written and handed to the queue; a worker will claim it
    SENDING = "sending"  # claimed by a worker that is talking to SMTP now
    RETRY = "retry"  # a temporary failure; due again at next_attempt_at
    SENT = "sent"
    FAILED = "failed"  # permanent: SMTP 5xx or out of attempts
    SKIPPED = "skipped"  # unsubscribed, suppressed or exited by the time it was sent
    CANCELLED = "cancelled"
    #: A broadcast email waiting for its time (e.g. 09:00 in the subscriber's own zone);
    #: `send-due` makes it `queued` when `next_attempt_at` comes.
    SCHEDULED = "scheduled"


#: Claimable by a worker: waiting for one (queued) or for its next attempt (retry).
TO_SEND = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY)
#: Not settled yet: still to send, or with a worker now.
UNSETTLED = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRY)
#: Not settled yet, a scheduled broadcast email included.
IN_FLIGHT = (DeliveryStatus.SCHEDULED, *UNSETTLED)
#: Stopped before reaching the reader, and never going to: not counted as mail sent.
NOT_GOING = (DeliveryStatus.SKIPPED, DeliveryStatus.CANCELLED, DeliveryStatus.FAILED)


class DeliveryKind(StrEnum):
    SEQUENCE = "sequence"  # a step of an enrolment
    CONFIRM = "confirm"  # the double opt-in email
    BROADCAST = "broadcast"  # one recipient of a newsletter issue


class HandoffStatus(StrEnum):
    RECORDED = "recorded"  # no webhook or sales email configured: `nurture leads` only
    PENDING = "pending"
    SENDING = "sending"
    RETRY = "retry"
    DELIVERED = "delivered"
    FAILED = "failed"  # out of attempts; shown by `nurture stats`


class BroadcastState(StrEnum):
    DRAFT = "draft"  # written for test copies; not going out
    SCHEDULED = "scheduled"  # waiting for send_at
    SENDING = "sending"  # fan-out started; emails are going out
    SENT = "sent"  # every email settled
    CANCELLED = "cancelled"


class SunsetOutcome(StrEnum):
    """Where one round of the `[sunset]` policy stands for a subscriber (table sunsets)."""

    WINBACK = "winback"  # found inactive: in the win-back sequence, or its grace after it
    WON_BACK = "won_back"  # opened or clicked (or confirmed again) since: they stay
    UNSUBSCRIBED = "unsubscribed"  # still silent: unsubscribed, reason "inactive"
    STOPPED = "stopped"  # still silent: no newsletters (then = "stop_broadcasts")
    LEFT = "left"  # unsubscribed or bounced by themselves during the win-back


#: A round not over yet: the subscriber is in win-back, or gets no newsletters.
SUNSET_OPEN = (SunsetOutcome.WINBACK, SunsetOutcome.STOPPED)
