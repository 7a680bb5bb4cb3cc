"""The statements of the send path, built once: each runs for every group of deliveries.

Every write is fenced by the claim: it matches a row only while it is `sending` with
the claim's attempt number (states.py says why).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Table,
    Update,
    bindparam,
    case,
    exists,
    func,
    select,
    update,
)

from nurture.journeys.scheduling import TAKEN_BACK
from nurture.store.tables import (
    TO_SEND,
    Broadcast,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
    Tag,
)

_d = cast(Table, Delivery.__table__)
_s = cast(Table, Subscriber.__table__)
_e = cast(Table, Enrollment.__table__)
_b = cast(Table, Broadcast.__table__)
_ids: BindParameter[list[int]] = bindparam("ids", expanding=True)
#: Returns what sending a delivery reads of it (not every column: each row returned is
#: converted, its times included, for every email).
CLAIM = (
    update(_d)
    .where(_d.c.id.in_(_ids), _d.c.status.in_(TO_SEND))
    .values(status=DeliveryStatus.SENDING, claimed_at=bindparam("now"),
            attempts=_d.c.attempts + 1, handed_at=None)
    .returning(_d.c.id, _d.c.subscriber_id, _d.c.enrollment_id, _d.c.kind, _d.c.sequence,
               _d.c.step_id, _d.c.broadcast_id, _d.c.is_test, _d.c.attempts, _d.c.variant)
)  # fmt: skip
#: Undoes a claim made at `now` whose commit may have landed after its connection was
#: lost; the claim that follows in the same transaction takes the rows again.
RELEASE = (
    update(_d)
    .where(_d.c.id.in_(_ids), _d.c.status == DeliveryStatus.SENDING,
           _d.c.claimed_at == bindparam("now"))
    .values(status=DeliveryStatus.RETRY, next_attempt_at=bindparam("now"),
            attempts=_d.c.attempts - 1, handed_at=None)
)  # fmt: skip
_suppressed = exists().where(Suppression.email_hash == bindparam("hhash"))
_still = exists().where(_s.c.id == _d.c.subscriber_id, _s.c.status == bindparam("hstatus"))
#: Marks a claimed delivery as handed to SMTP, if its claim (`htoken`) still holds:
#: committed before its SMTP transaction starts, so `send-due` knows what may have left.
#: It is also the last look before the wire: not if the address (`hhash`) was
#: suppressed, or the subscriber left `hstatus`, since the group was claimed.
HAND = (
    update(_d)
    .where(_d.c.id == bindparam("hid"), _d.c.attempts == bindparam("htoken"),
           _d.c.status == DeliveryStatus.SENDING, ~_suppressed, _still)
    .values(handed_at=bindparam("now"))
)  # fmt: skip
#: Why HAND did not mark a delivery whose claim still holds: (subscriber status,
#: address suppressed); no row when the claim itself was lost.
HELD_BACK = (
    select(_s.c.status, _suppressed.label("suppressed"))
    .select_from(_d.join(_s, _s.c.id == _d.c.subscriber_id))
    .where(_d.c.id == bindparam("hid"), _d.c.attempts == bindparam("htoken"),
           _d.c.status == DeliveryStatus.SENDING)
)  # fmt: skip
#: Each delivery's subscriber, its enrolment's state and its broadcast's topic.
READERS = (
    select(_d.c.id.label("delivery_id"), _s.c.id, _s.c.email, _s.c.first_name, _s.c.timezone,
           _s.c.attributes, _s.c.status, _s.c.link_key, _s.c.paused_until,
           _e.c.status.label("enrollment_status"), _b.c.topic.label("broadcast_topic"))
    .select_from(_d.join(_s, _s.c.id == _d.c.subscriber_id)
                 .outerjoin(_e, _e.c.id == _d.c.enrollment_id)
                 .outerjoin(_b, _b.c.id == _d.c.broadcast_id))
    .where(_d.c.id.in_(_ids))
)  # fmt: skip
SUPPRESSED = select(Suppression.email_hash).where(
    Suppression.email_hash.in_(bindparam("hashes", expanding=True))
)
TAGS = (
    select(Tag.subscriber_id, Tag.name)
    .where(Tag.subscriber_id.in_(_ids))
    .order_by(Tag.subscriber_id, Tag.name)
)
#: Fenced by the claim's number; executed once per sent delivery, in one executemany.
SENT = (
    update(_d)
    .where(_d.c.id == bindparam("did"), _d.c.attempts == bindparam("token"),
           _d.c.status == DeliveryStatus.SENDING)
    .values(status=DeliveryStatus.SENT, sent_at=bindparam("now"), message_id=bindparam("mid"),
            subject=bindparam("subj"),
            # keeping the note that it may have gone out twice
            error=case((_d.c.maybe_twice, TAKEN_BACK), else_=None))
)  # fmt: skip


def move_on(enrollment_id: Any) -> Update:
    """An enrolment moves on only while it still waits for the step just sent."""
    return (
        update(_e)
        .where(_e.c.id == enrollment_id, _e.c.next_step_id == bindparam("was"),
               _e.c.status == EnrollmentStatus.ACTIVE)
        .values(next_step_id=bindparam("next"), next_due_at=bindparam("due"),
                last_sent_at=bindparam("now"))
    )  # fmt: skip


MOVE_ON = move_on(bindparam("eid"))


#: A sent email's record, the next one's mark (and its enrolment's move) in one
#: statement: (sent, next handed) counts. PostgreSQL runs data-modifying CTEs once,
#: even unread. Its commit does not wait for the disk (`synchronous_commit` off for
#: this one transaction, set by the statement itself): a worker killed afterwards loses
#: nothing, as the server has the record; only a crash of the server itself can lose
#: the last such records, which reconnect.Db writes again on a fresh connection.
_sent_cte = SENT.returning(_d.c.enrollment_id).cte("sent")
SENT_AND_HANDED = select(
    select(func.count()).select_from(_sent_cte).scalar_subquery(),
    select(func.count()).select_from(HAND.returning(_d.c.id).cte("handed")).scalar_subquery(),
    func.set_config("synchronous_commit", "off", True),
)
SENT_MOVED_AND_HANDED = SENT_AND_HANDED.add_cte(move_on(_sent_cte.c.enrollment_id).cte("moved"))
#: A commit that waits for the disk (a transaction id makes it write one): every record
#: written before it, on any connection, is then durable too.
DURABLE = select(func.txid_current())
RECORDED = select(_d.c.id).where(
    _d.c.id == bindparam("did"), _d.c.attempts == bindparam("token"),
    _d.c.status == DeliveryStatus.SENT, _d.c.message_id == bindparam("mid"),
)  # fmt: skip
