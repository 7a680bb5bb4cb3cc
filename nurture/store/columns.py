"""What every table is built from: aware-UTC times, the declarative base with named
constraints, and the random keys of a subscriber's links (tables.py re-exports them)."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

from nurture import clock


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return clock.now()


class Base(DeclarativeBase):
    # Named constraints keep Alembic's batch mode on SQLite able to alter them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


#: Random bytes in a link key: 16 URL-safe characters, no padding.
LINK_KEY_BYTES = 12


def new_link_key() -> str:
    """A fresh random key for a subscriber's links (see Subscriber.link_key)."""
    return secrets.token_urlsafe(LINK_KEY_BYTES)


def new_link_keys(n: int) -> list[str]:
    """`n` keys as `new_link_key` draws them, from one read of the system's randomness (a
    bulk import): 12 bytes encode to exactly 16 characters, so the slices are whole keys."""
    text = base64.urlsafe_b64encode(secrets.token_bytes(LINK_KEY_BYTES * n)).decode()
    return [text[i : i + 16] for i in range(0, len(text), 16)]
